//! `bkp restore --kind duckdb`: rebuild a DuckDB database file from the newest full
//! export at or before the chosen point and the incrementals after it, in order.
//!
//! Every object is verified (SHA-256 of the stored bytes, then of the decrypted
//! Parquet) before DuckDB reads it. The database is built in a new file beside the
//! target: the full export's schema, then each table's rows. With incrementals, the
//! tables are first rebuilt in a scratch database without constraints (a changed
//! row that a foreign key references could not be replaced in place): each
//! incremental removes rows whose key is gone (the recorded key set), replaces
//! changed rows by primary key and adds new ones; tables copied whole are replaced.
//! The final rows are then copied into the new file in creation order. After every
//! export applied, every table's row count must equal the count the manifest
//! recorded. Only then is the file renamed into place, and an existing target is
//! replaced only with `--force`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ::duckdb::Connection;
use anyhow::{Context, Result};
use serde_json::json;

use super::target::{Shape, Target};
use super::{RestorePlan, Source};
use crate::chain;
use crate::cli::RestoreArgs;
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::manifest::duckdb::{self as export, TableMode, TableRecord, SCHEMA_FILE};
use crate::manifest::Manifest;
use crate::sources::duck::{qualified, quote_ident, quote_literal};
use crate::{pipeline, ui};

/// Removes a database file being built (and its WAL) when dropped, unless disarmed.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(wal(&p));
            let _ = fs::remove_file(p);
        }
    }
}

/// The write-ahead log DuckDB keeps beside database file `p`.
fn wal(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".wal");
    PathBuf::from(s)
}

pub fn run(ctx: &Ctx, src: &Source, rp: &RestorePlan, args: &RestoreArgs) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a DuckDB restore needs an export")?;
    let target = Target::check(
        &args.target,
        Shape::File,
        args.force,
        &super::precious(&ctx.plan),
    )?;
    // A write-ahead log left beside a removed database would be replayed into,
    // or refuse, the restored file.
    let stale_wal = wal(&target.path);
    if !target.exists && !args.force && fs::symlink_metadata(&stale_wal).is_ok() {
        return Err(coded(
            Code::TargetExists,
            format!(
                "{} exists beside the restore target (the write-ahead log of an earlier database there): move it away, choose another path, or pass --force",
                stale_wal.display()
            ),
        ));
    }
    if target.exists {
        refuse_open_database(&target.path)?;
    }

    let mut scratch = src.work.scratch("restore")?;
    let staging = target.stage(&mut scratch)?;
    let clock = Instant::now();
    ctx.ui.detail(&format!(
        "restoring DuckDB export {} from {} into {}",
        m.id,
        src.store.identity(),
        target.path.display()
    ));
    let counts = restore_database(src, m, &target.staged_file(&staging))?;

    // A WAL left beside the old file would be replayed into the new one: move it
    // aside, and back if the new file cannot take the old one's place.
    let old_wal = wal(&target.path);
    let aside = staging.join("replaced.wal");
    let moved = old_wal.exists();
    if moved {
        fs::rename(&old_wal, &aside)
            .with_context(|| format!("failed to move {} aside", old_wal.display()))?;
    }
    if let Err(e) = target.commit(&staging, &mut scratch) {
        if moved {
            let _ = fs::rename(&aside, &old_wal);
        }
        return Err(e);
    }

    let rows: u64 = counts.values().sum();
    let elapsed = clock.elapsed();
    if ctx.ui.json {
        return ui::print(&serde_json::to_string_pretty(&json!({
            "id": m.id,
            "kind": "duckdb",
            "target": target.path.display().to_string(),
            "tables": counts,
            "rows": rows,
            "seconds": elapsed.as_secs_f64(),
        }))?);
    }
    ctx.ui.info(&format!(
        "restored DuckDB export {} into {}: {} tables, {rows} rows, every count verified, in {:.1}s ({})",
        m.id,
        target.path.display(),
        counts.len(),
        elapsed.as_secs_f64(),
        ui::size(fs::metadata(&target.path).map(|m| m.len()).unwrap_or(0)),
    ));
    ui::print(&target.path.display().to_string())
}

/// Refuses to replace a file another process has open in DuckDB.
fn refuse_open_database(target: &Path) -> Result<()> {
    if let Err(e) =
        crate::sources::duck::open_read_only(target, std::time::Duration::ZERO, None, None)
    {
        if crate::exit::classify(&e) == Some(Code::UnsafeSource) {
            return Err(e.context(format!(
                "refusing to replace {}: a process has it open",
                target.display()
            )));
        }
    }
    Ok(())
}

/// Restores the chain of exports ending at `m` into a new DuckDB file `target`
/// (which must not exist), verifies every table's row count against the
/// manifests, and returns the counts by `schema.table` (excluded tables, restored
/// empty, are left out). On failure no file is left at `target`.
pub fn restore_database(
    src: &Source,
    m: &Manifest,
    target: &Path,
) -> Result<BTreeMap<String, u64>> {
    if target.exists() {
        return Err(coded(
            Code::TargetExists,
            format!(
                "{} exists: a DuckDB restore builds a new file",
                target.display()
            ),
        ));
    }
    let all = export::export_manifests(src.store, src.trust)?;
    let chain: Vec<Manifest> = chain::Index::new(&all)
        .ancestry(m)
        .map_err(|b| {
            coded(
                Code::NotFound,
                format!(
                    "the chain of export {} is broken ({b}): restore an older export, or take `bkp export --full`",
                    m.id
                ),
            )
        })?
        .into_iter()
        .cloned()
        .collect();
    let keyring = if chain.iter().any(|m| m.encryption.is_some()) {
        Some(src.keyring.ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "export {} is encrypted, but the config has no [encryption] key: configure it to restore",
                    m.id
                ),
            )
        })?)
    } else {
        None
    };
    let work = src.work.scratch("duckdb")?;
    let store = src.store;

    // Fetches one file of an export, verified, into the work directory.
    let fetch = |m: &Manifest, name: &str| -> Result<PathBuf> {
        let i = m
            .files
            .iter()
            .position(|f| f.name == name)
            .with_context(|| format!("export {} does not list {name}", m.id))?;
        let entry = m
            .objects
            .get(i)
            .with_context(|| format!("export {} has no object for {name}", m.id))?;
        let path = work.join(format!("{}-{i}", m.id));
        pipeline::download(
            store,
            entry,
            m.compression,
            keyring,
            work.path(),
            src.progress.clone(),
            |r| {
                let mut f = fs::File::create(&path)
                    .with_context(|| format!("failed to create {}", path.display()))?;
                std::io::copy(r, &mut f)
                    .with_context(|| format!("failed to write {}", path.display()))?;
                Ok(())
            },
        )?;
        Ok(path)
    };

    // A failed restore leaves no partial database behind (declared before the
    // connection, so that the connection closes first).
    let mut partial = Partial(Some(target.to_path_buf()));
    let conn = Connection::open(target)
        .with_context(|| format!("failed to create DuckDB database {}", target.display()))?;
    let schema_file = fetch(&chain[0], SCHEMA_FILE)?;
    let schema = fs::read_to_string(&schema_file).context("the exported schema is not UTF-8")?;
    fs::remove_file(&schema_file).ok();
    conn.execute_batch(&schema).with_context(|| {
        format!(
            "failed to recreate the schema of export {} in {}",
            chain[0].id,
            target.display()
        )
    })?;
    // Tables in creation order, so that rows referenced by foreign keys come first.
    let mut tables: Vec<TableRecord> = export::table_records(&chain[0])?.into_values().collect();
    tables.sort_by_key(|r| r.position);
    let real = |r: &TableRecord| qualified(&r.schema, &r.table);

    let counts = if chain.len() == 1 {
        for r in &tables {
            apply_table(&conn, &real(r), r, |name| fetch(&chain[0], name))
                .with_context(|| format!("failed to restore table {}.{}", r.schema, r.table))?;
        }
        verify_counts(&conn, &chain[0], real)?
    } else {
        // Incrementals are applied to staging tables without constraints in a
        // scratch database (a changed row referenced by a foreign key could not be
        // replaced in place), then each table's final rows are copied once, in
        // creation order.
        let scratch = work.join("stage.duckdb");
        conn.execute_batch(&format!(
            "ATTACH {} AS bkp_stage",
            quote_literal(&scratch.to_string_lossy())
        ))
        .with_context(|| format!("failed to create {}", scratch.display()))?;
        let index: BTreeMap<String, usize> = tables
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{}.{}", r.schema, r.table), i))
            .collect();
        let staged = |r: &TableRecord| {
            format!(
                "bkp_stage.main.t{}",
                index
                    .get(&format!("{}.{}", r.schema, r.table))
                    .copied()
                    .unwrap_or(usize::MAX)
            )
        };
        for r in &tables {
            // The stored columns only: generated ones are computed by the table.
            let generated = crate::sources::duck::generated_columns(&conn, &r.schema, &r.table)?;
            let exclude = if generated.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = generated
                    .iter()
                    .map(|c| crate::sources::duck::quote_ident(c))
                    .collect();
                format!(" EXCLUDE ({})", names.join(", "))
            };
            conn.execute_batch(&format!(
                "CREATE TABLE {} AS SELECT *{exclude} FROM {} LIMIT 0",
                staged(r),
                real(r)
            ))
            .with_context(|| format!("failed to stage table {}.{}", r.schema, r.table))?;
        }
        for e in &chain {
            let records = export::table_records(e)?;
            for (key, r) in &records {
                if !index.contains_key(key) {
                    return Err(coded(
                        Code::Integrity,
                        format!("export {} has table {key}, which its full export {} does not: the chain is inconsistent", e.id, chain[0].id),
                    ));
                }
                apply_table(&conn, &staged(r), r, |name| fetch(e, name)).with_context(|| {
                    format!("failed to restore table {key} from export {}", e.id)
                })?;
            }
            verify_counts(&conn, e, staged)?;
            src.ui.detail(&format!(
                "  applied {} export {} ({} tables verified)",
                e.scope.as_str(),
                e.id,
                records.len()
            ));
        }
        for r in &tables {
            conn.execute(
                &format!("INSERT INTO {} SELECT * FROM {}", real(r), staged(r)),
                [],
            )
            .with_context(|| format!("failed to restore table {}.{}", r.schema, r.table))?;
        }
        conn.execute_batch("DETACH bkp_stage")
            .context("failed to detach the staging database")?;
        verify_counts(&conn, m, real)?
    };
    // Sequences continue where the newest export saw them.
    if let Some(v) = m.source.get("sequences") {
        let seqs: Vec<crate::sources::duck::Sequence> = serde_json::from_value(v.clone())
            .with_context(|| format!("manifest {} has unreadable sequences", m.key()))?;
        for s in &seqs {
            crate::sources::duck::advance_sequence(&conn, s)?;
        }
    }
    conn.execute_batch("CHECKPOINT")
        .with_context(|| format!("failed to checkpoint {}", target.display()))?;
    drop(conn);
    partial.0 = None;
    Ok(counts)
}

/// Applies one table's part of one export.
fn apply_table(
    conn: &Connection,
    t: &str,
    r: &TableRecord,
    mut fetch: impl FnMut(&str) -> Result<PathBuf>,
) -> Result<()> {
    let file = |role: &str| r.files.iter().find(|f| f.role == role);
    let read = |p: &Path| format!("read_parquet({})", quote_literal(&p.to_string_lossy()));
    match r.mode {
        TableMode::Excluded | TableMode::Skipped => {}
        TableMode::Full | TableMode::FullCopy => {
            let f = file("data").context("no data file recorded")?;
            let p = fetch(&f.name)?;
            if r.mode == TableMode::FullCopy {
                conn.execute(&format!("DELETE FROM {t}"), [])?;
            }
            conn.execute(&format!("INSERT INTO {t} SELECT * FROM {}", read(&p)), [])?;
            fs::remove_file(&p).ok();
        }
        TableMode::Incremental => {
            let f = file("data").context("no data file recorded")?;
            let data = fetch(&f.name)?;
            if !r.primary_key.is_empty() {
                let on = |a: &str, b: &str| {
                    r.primary_key
                        .iter()
                        .map(|c| {
                            format!("{a}.{q} IS NOT DISTINCT FROM {b}.{q}", q = quote_ident(c))
                        })
                        .collect::<Vec<_>>()
                        .join(" AND ")
                };
                if let Some(k) = file("keys") {
                    let keys = fetch(&k.name)?;
                    conn.execute(
                        &format!(
                            "DELETE FROM {t} AS x WHERE NOT EXISTS (SELECT 1 FROM {} AS k WHERE {})",
                            read(&keys),
                            on("x", "k")
                        ),
                        [],
                    )?;
                    fs::remove_file(&keys).ok();
                }
                conn.execute(
                    &format!(
                        "DELETE FROM {t} AS x WHERE EXISTS (SELECT 1 FROM {} AS d WHERE {})",
                        read(&data),
                        on("x", "d")
                    ),
                    [],
                )?;
            }
            conn.execute(
                &format!("INSERT INTO {t} SELECT * FROM {}", read(&data)),
                [],
            )?;
            fs::remove_file(&data).ok();
        }
    }
    Ok(())
}

/// Checks every table's row count (in the table `name` gives) against the
/// export's records.
fn verify_counts(
    conn: &Connection,
    e: &Manifest,
    name: impl Fn(&TableRecord) -> String,
) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (key, r) in &export::table_records(e)? {
        let Some(want) = r.rows_total else { continue };
        let got: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", name(r)), [], |row| {
            row.get(0)
        })?;
        let got = got.max(0) as u64;
        if got != want {
            return Err(coded(
                Code::Integrity,
                format!(
                    "table {key} has {got} rows after applying export {}, but the manifest records {want}{}; nothing was restored",
                    e.id,
                    if r.primary_key.is_empty() && r.mode == TableMode::Incremental {
                        " (the table has no primary key, so rows updated between exports were added again: configure duckdb.primary_keys for it, or export it without a watermark)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        counts.insert(key.clone(), got);
    }
    Ok(counts)
}
