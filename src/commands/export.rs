//! `bkp export`: DuckDB hot tier → Parquet (ZSTD) per table → encrypt → SHA-256 →
//! upload → manifest → ledger.
//!
//! `--full` copies every table whole. Without it, each table with a configured
//! watermark column gives only the rows whose watermark lies after the previous
//! export's bound and up to this run's bound (the column's highest value in the
//! snapshot bkp reads), plus, for tables with a primary key, the table's current
//! key set, so that a restore also removes deleted rows. Stateless: the previous
//! bounds come from the newest export manifest in the store, which becomes the
//! new export's `parent`. An incremental without a usable previous export (none
//! yet, a broken chain, or a changed schema) is taken as a full export, and the
//! manifest and the output say so.
//!
//! Each Parquet file is its own object under
//! `duckdb/{full|incremental}/{yyyy}/{mm}/{dd}/{id}/`, with the schema as
//! `schema.sql`. DuckDB writes each file into a pipe that the upload reads, so the
//! rows never land on local disk and DuckDB's writing overlaps encryption and
//! upload. Parquet is already ZSTD-compressed, so by default the objects are only
//! encrypted (`duckdb.recompress = true` compresses them again).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::chain;
use crate::config::{DuckdbPlan, WithoutWatermark};
use crate::exit::{coded, Code};
use crate::ledger::Operation;
use crate::manifest::duckdb::{
    export_manifests, object_key, table_records, Fingerprint, TableFile, TableMode, TableRecord,
    Watermark, DELETES_NOTE, FINGERPRINT_METHOD, SCHEMA_FILE,
};
use crate::manifest::{FileEntry, Kind, Manifest, ObjectEntry, Scope};
use crate::sources::duck::{self, Table};
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::workdir::WorkDir;
use crate::{pipeline, ui};

/// A file-name-safe, unique stem for a table: `schema.table` with odd characters
/// replaced (and a number added if that makes two tables collide).
fn stems(tables: &[Table]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let clean: String = t
                .key()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let stem = if seen.contains(&clean) {
                format!("{clean}-{i}")
            } else {
                clean
            };
            seen.insert(stem.clone());
            stem
        })
        .collect()
}

/// Removes a file or directory when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.0).is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What an export asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every table whole.
    Full,
    /// The rows changed since the previous export.
    Incremental,
    /// The rows changed since the last full export: its parent is that full
    /// export, so a restore needs two exports instead of a chain.
    Differential,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
            Mode::Differential => "differential",
        }
    }
}

/// Says why an export is taken whole, if it is, and holds the exports this
/// one builds on (the chain up to `previous`) as long as it (Object Lock).
fn announce_and_hold(
    ctx: &Ctx,
    run: &Run,
    note: &Option<String>,
    all: &[Manifest],
    previous: Option<&Manifest>,
) -> Result<()> {
    if let Some(n) = note {
        ctx.ui.info(&format!("export {}: {n}", run.id));
    }
    let Some(p) = previous else { return Ok(()) };
    let chain = chain::Index::new(all)
        .ancestry(p)
        .unwrap_or_else(|_| vec![p]);
    run.hold(&chain, Vec::new())
}

pub fn run(ctx: &Ctx, mode: Mode) -> Result<()> {
    let full = mode == Mode::Full;
    let plan = &ctx.plan;
    let d = plan.duckdb.as_ref().ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: `bkp export` needs a [duckdb] section with database = \"/path/to/hot.duckdb\"",
                plan.source.display()
            ),
        )
    })?;
    let (trust, store) = super::backup_store(plan)?;
    let compression = if d.recompress {
        plan.compression
    } else {
        Compression::None
    };
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Duckdb,
            scope: if full {
                Scope::Full
            } else {
                Scope::Incremental
            },
            operation: Operation::Export,
            compression,
            retention_days: d.retention_days,
        },
    )?;
    let (id, started_at) = (run.id, run.started_at);

    let outcome = (|| -> Result<Stored> {
        // Read the store first: the database is held only while it is read.
        let all = export_manifests(store.as_ref(), &trust)?;
        let conn = duck::open_read_only(
            &d.database,
            d.lock_wait,
            d.memory_limit.as_deref(),
            d.threads,
        )?;
        conn.execute_batch("BEGIN TRANSACTION")
            .context("failed to start a read transaction")?;
        let duckdb_version = duck::version(&conn);
        let mut tables = duck::tables(&conn)?;
        check_names(d, &tables)?;
        check_tables(d, &tables, &duck::foreign_keys(&conn)?)?;
        let mut schema = duck::schema(&conn)?;
        // What a restore could not recreate is found now, rather than at 03:00
        // by the restore: it is left out, everything else is stored, and the
        // run says what it left out (exit 12).
        duck::replay(&mut schema, &tables)?;
        tables.retain(|t| !schema.omits_table(&t.key()));
        for (what, why) in &schema.omitted {
            ctx.ui.warn(&format!(
                "export {id}: {what} is left out: a restore could not recreate it ({why})"
            ));
        }
        let sequences = duck::sequences(&conn)?;
        let schema_sha = crate::stages::hash::digest_reader(schema.shape().as_bytes())?.sha256;

        // The previous export, if this run can build on it.
        let mut note = None;
        // Only this database's exports: one store may hold several.
        let this_db = json!(d.database.display().to_string());
        let newest_of_this_db = all
            .iter()
            .rev()
            .find(|m| m.source.get("database") == Some(&this_db));
        let previous = match (full, newest_of_this_db) {
            (true, _) => None,
            (false, None) => {
                note = Some("no previous full export: taken as a full export".to_string());
                None
            }
            (false, Some(head)) => match chain::Index::new(&all).ancestry(head) {
                Err(e) => {
                    note = Some(format!(
                        "the previous export's chain is unusable ({e}): taken as a full export"
                    ));
                    None
                }
                // The catalog chose the chain: its manifests must still be in
                // the store as recorded before anything builds on them.
                Ok(c) if !chain_stands(store.as_ref(), &trust, &c, &mut note)? => None,
                Ok(_) if head.source.get("schema_sha256") != Some(&json!(schema_sha)) => {
                    note = Some(format!(
                        "the schema changed since export {}: taken as a full export",
                        head.id
                    ));
                    None
                }
                // A differential builds on the chain's full export.
                Ok(c) if mode == Mode::Differential => {
                    Some((c[0].clone(), table_records(c[0])?, c[0].id))
                }
                Ok(c) => Some((head.clone(), table_records(head)?, c[0].id)),
            },
        };
        announce_and_hold(ctx, &run, &note, &all, previous.as_ref().map(|p| &p.0))?;
        let scope = if previous.is_some() {
            Scope::Incremental
        } else {
            Scope::Full
        };
        ctx.ui.detail(&format!(
            "{} export {id} of {} ({} tables) to {}",
            scope.as_str(),
            d.database.display(),
            tables.len(),
            store.identity()
        ));

        let staging = WorkDir::new(&plan.work_dir).scratch("export")?;
        let suffix = run.suffix("", compression);
        let progress = ctx.progress();
        let mut objects = Vec::new();
        let mut files = Vec::new();
        // Uploads one file, whose bytes `produce` writes.
        let mut upload = |name: &str,
                          produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>|
         -> Result<(ObjectEntry, FileEntry)> {
            let key = object_key(scope, id, started_at, name, &suffix);
            let entry = pipeline::upload(
                store.as_ref(),
                &key,
                &run.metadata(scope),
                compression,
                run.keyring,
                progress.clone(),
                produce,
            )?;
            let file = FileEntry {
                name: name.to_string(),
                size: entry.content_bytes,
                sha256: entry.content_sha256.clone(),
            };
            objects.push(entry.clone());
            files.push(file.clone());
            Ok((entry, file))
        };

        upload(SCHEMA_FILE, &mut |w| {
            Ok(w.write_all(schema.sql().as_bytes())?)
        })?;

        for t in &tables {
            for (c, ty) in t.columns.iter().zip(&t.types) {
                if ty.contains("UNION(") && d.exports(&t.schema, &t.name) {
                    ctx.ui.warn(&format!(
                        "column {c} of {} is a UNION: it is exported as text, and a restore keeps its value but not which member it was",
                        t.key()
                    ));
                }
            }
        }
        let mut records = BTreeMap::new();
        for (position, (t, stem)) in tables.iter().zip(stems(&tables)).enumerate() {
            let prev = previous.as_ref().and_then(|(_, r, _)| r.get(&t.key()));
            let rec = export_table(
                &conn,
                d,
                (position, t),
                prev,
                (previous.is_some(), &duckdb_version),
                |role, select| {
                    let name = format!("{stem}/{role}.parquet");
                    let fifo = staging.join(format!("{stem}.{role}.parquet"));
                    let (rows, (entry, file)) =
                        stream_parquet(&conn, &select, &fifo, |produce| upload(&name, produce))
                            .with_context(|| format!("failed to export table {}", t.key()))?;
                    Ok(TableFile {
                        role: role.to_string(),
                        name,
                        object: entry.key,
                        rows,
                        size: file.size,
                        sha256: file.sha256,
                    })
                },
            )?;
            ctx.ui.detail(&format!(
                "  {}: {}, {} rows{}{}",
                t.key(),
                rec.mode.as_str(),
                rec.rows,
                rec.rows_total
                    .map(|n| format!(" ({n} in the table)"))
                    .unwrap_or_default(),
                rec.note
                    .as_ref()
                    .map(|n| format!("; {n}"))
                    .unwrap_or_default()
            ));
            records.insert(t.key(), rec);
        }
        conn.execute_batch("COMMIT").ok();
        drop(conn);

        let mut source = crate::manifest::facts::Facts::new();
        source.insert("database", json!(d.database.display().to_string()));
        source.insert("duckdb_version", json!(duckdb_version));
        source.insert("requested", json!(mode.as_str()));
        if previous.is_some() && mode == Mode::Differential {
            source.insert("differential", json!(true));
        }
        if let Some(n) = &note {
            source.insert("note", json!(n));
        }
        source.insert(
            "chain_full",
            json!(previous.as_ref().map_or(id, |(_, _, root)| *root)),
        );
        source.insert("schema_sha256", json!(schema_sha));
        source.insert("deleted_rows", json!(DELETES_NOTE));
        source.insert("sequences", serde_json::to_value(&sequences)?);
        source.insert("tables", serde_json::to_value(&records)?);
        if !schema.omitted.is_empty() {
            let omitted: Vec<_> = schema
                .omitted
                .iter()
                .map(|(what, why)| json!({ "object": what, "reason": why }))
                .collect();
            source.insert("omitted", json!(omitted));
        }
        let mut stored = run.store_manifest(run.manifest(Body {
            scope: Some(scope),
            objects,
            files,
            parent: previous.as_ref().map(|(h, _, _)| h.id),
            source,
            ..Body::default()
        }))?;
        if !schema.omitted.is_empty() {
            let list: Vec<String> = schema
                .omitted
                .iter()
                .map(|(what, why)| format!("{what} ({why})"))
                .collect();
            stored.problems.push(coded(
                Code::Unsupported,
                format!(
                    "export {id} is stored without what a restore could not recreate: {}. A restore gives the database without them: change or drop them, then export again",
                    list.join("; ")
                ),
            ));
        }
        Ok(stored)
    })();

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        report(ctx, m, d, store, elapsed, ledger)
    })
}

/// The pipe size asked for (Linux's default limit for unprivileged processes).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Runs `select` into a Parquet file written to a FIFO at `fifo`, while `upload`
/// (on another thread) reads it: the export's rows never land on local disk, and
/// DuckDB's writing overlaps with encryption and upload. Returns the rows and what
/// `upload` returned.
fn stream_parquet<T: Send>(
    conn: &::duckdb::Connection,
    select: &str,
    fifo: &Path,
    upload: impl FnOnce(&mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<T> + Send,
) -> Result<(u64, T)> {
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
        .with_context(|| format!("bad path {}", fifo.display()))?;
    // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("failed to create the pipe {}", fifo.display()));
    }
    let _remove = Staging(fifo.to_path_buf());
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let opened = AtomicBool::new(false);
            let result = upload(&mut |w: &mut dyn Write| {
                let mut f = std::fs::File::open(fifo)
                    .with_context(|| format!("failed to open {}", fifo.display()))?;
                opened.store(true, Ordering::SeqCst);
                // A larger pipe and large reads: fewer wake-ups of DuckDB's writer
                // and of this thread (best effort: the default size works too).
                // SAFETY: F_SETPIPE_SZ on a pipe descriptor this function owns.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("failed to read {}", fifo.display()))
                        }
                    };
                    w.write_all(&buf[..n])?;
                }
                if failed.load(Ordering::SeqCst) {
                    anyhow::bail!("DuckDB stopped writing {}", fifo.display());
                }
                Ok(())
            });
            if result.is_err() && !opened.load(Ordering::SeqCst) {
                // The upload failed before it read the pipe: DuckDB would wait
                // forever to open it for writing, holding the database. Take its
                // output into nothing so that the copy ends.
                if let Ok(mut f) = std::fs::File::open(fifo) {
                    let _ = std::io::copy(&mut f, &mut std::io::sink());
                }
            }
            result
        });
        let rows = duck::copy_to_parquet(conn, select, fifo);
        if rows.is_err() {
            // Wake the reader, which may wait for a writer that never came, and
            // make it abort the upload.
            failed.store(true, Ordering::SeqCst);
            while !reader.is_finished() {
                let opened = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(fifo);
                if opened.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let uploaded = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the upload thread of {} panicked", fifo.display()))?;
        let rows = rows?;
        Ok((rows, uploaded?))
    })
}

/// Refuses table names in the config that match no table (a typo would silently
/// export nothing, or everything).
fn check_names(d: &DuckdbPlan, tables: &[Table]) -> Result<()> {
    let known = |n: &str| {
        tables
            .iter()
            .any(|t| t.key() == n || (t.schema == "main" && t.name == n))
    };
    let named = [
        ("duckdb.include", d.include.iter().collect::<Vec<_>>()),
        ("duckdb.exclude", d.exclude.iter().collect()),
        ("duckdb.watermarks", d.watermarks.keys().collect()),
        ("duckdb.primary_keys", d.primary_keys.keys().collect()),
    ];
    for (key, names) in named {
        if let Some(n) = names.into_iter().find(|n| !known(n)) {
            return Err(coded(
                Code::Config,
                format!(
                    "{key} names table {n:?}, which {} does not have (its tables: {}): fix the config",
                    d.database.display(),
                    tables.iter().map(|t| t.key()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses what would export without error but not restore: two tables that
/// share one `schema.table` name (a dot inside a name: manifests and the config
/// name tables that way), and a foreign key from an exported table into one the
/// config leaves out (its rows would reference rows a restore does not have).
fn check_tables(
    d: &DuckdbPlan,
    tables: &[Table],
    foreign_keys: &[(String, String, String)],
) -> Result<()> {
    for (i, t) in tables.iter().enumerate() {
        if let Some(other) = tables[..i].iter().find(|o| o.key() == t.key()) {
            return Err(coded(
                Code::Unsupported,
                format!(
                    "tables {} and {} are both named {} as bkp names tables (schema.table), so a restore could not tell them apart: nothing was exported. Rename one of them (no dot in schema or table names), then export again",
                    other.sql_name(),
                    t.sql_name(),
                    t.key()
                ),
            ));
        }
    }
    for (schema, table, referenced) in foreign_keys {
        if d.exports(schema, table) && !d.exports(schema, referenced) {
            return Err(coded(
                Code::Config,
                format!(
                    "table {schema}.{table} has a foreign key into {schema}.{referenced}, which duckdb.include or duckdb.exclude leaves out: a restore would have rows referencing rows it does not have, and could not load them. Export both tables or exclude both: fix the config"
                ),
            ));
        }
    }
    Ok(())
}

fn export_table(
    conn: &::duckdb::Connection,
    d: &DuckdbPlan,
    (position, t): (usize, &Table),
    prev: Option<&TableRecord>,
    (incremental, duckdb_version): (bool, &str),
    mut copy: impl FnMut(&str, String) -> Result<TableFile>,
) -> Result<TableRecord> {
    let primary_key = DuckdbPlan::lookup(&d.primary_keys, &t.schema, &t.name)
        .cloned()
        .unwrap_or_else(|| t.primary_key.clone());
    for c in &primary_key {
        if !t.columns.contains(c) {
            return Err(coded(
                Code::Config,
                format!(
                    "duckdb.primary_keys names column {c:?} for table {}, which has no such column: fix the config",
                    t.key()
                ),
            ));
        }
    }
    let mut rec = TableRecord {
        position,
        schema: t.schema.clone(),
        table: t.name.clone(),
        mode: TableMode::Excluded,
        rows: 0,
        rows_total: None,
        primary_key: primary_key.clone(),
        watermark: None,
        files: Vec::new(),
        fingerprint: None,
        note: None,
    };
    if !d.exports(&t.schema, &t.name) {
        return Ok(rec);
    }
    let column = DuckdbPlan::lookup(&d.watermarks, &t.schema, &t.name);
    let mut bound = None;
    if let Some(c) = column {
        let (to, ty) = duck::watermark_bound(conn, t, c)?;
        bound = Some(Watermark {
            column: c.clone(),
            ty,
            from: None,
            to,
            overlap_ms: None,
        });
    }
    let all = t.select(None);
    // The previous bound, when this table can continue from it.
    let from = prev
        .filter(|p| p.mode != TableMode::Excluded)
        .and_then(|p| p.watermark.as_ref())
        .filter(|w| Some(&w.column) == column && bound.as_ref().is_some_and(|b| b.ty == w.ty))
        .and_then(|w| w.to.clone());

    rec.mode = match (incremental, &bound, &from) {
        (false, _, _) => TableMode::Full,
        (true, Some(_), Some(_)) => TableMode::Incremental,
        (true, None, _)
            if d.without_watermark == WithoutWatermark::Skip
                && prev.is_some_and(|p| p.rows_total.is_some()) =>
        {
            TableMode::Skipped
        }
        (true, None, _) => {
            rec.note = Some("no watermark column: copied whole".into());
            TableMode::FullCopy
        }
        (true, Some(_), None) => {
            rec.note = Some("no previous bound for this watermark column: copied whole".into());
            TableMode::FullCopy
        }
    };
    let count = |filter: &str| -> Result<u64> {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {}{filter}", t.sql_name()),
                [],
                |r| r.get(0),
            )
            .with_context(|| format!("failed to count the rows of {}", t.key()))?;
        Ok(n.max(0) as u64)
    };
    if rec.mode == TableMode::Incremental {
        // Rows with no watermark value cannot be selected by it: copy such a table whole.
        let c = bound
            .as_ref()
            .map(|b| duck::quote_ident(&b.column))
            .unwrap_or_default();
        if count(&format!(" WHERE {c} IS NULL"))? > 0 {
            rec.mode = TableMode::FullCopy;
            rec.note = Some("the watermark column holds NULLs: copied whole".into());
        }
    }
    if rec.mode == TableMode::Incremental {
        // NaN or an infinity is a bound no later value passes: selecting by it
        // would find nothing new, export after export.
        let stuck = [
            bound.as_ref().and_then(|b| b.to.as_deref()),
            from.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find(|v| never_passed(v));
        if let Some(v) = stuck {
            rec.mode = TableMode::FullCopy;
            rec.note = Some(format!(
                "the watermark bound is {v}, which no later value passes: copied whole"
            ));
        }
    }
    if rec.mode == TableMode::Incremental {
        let b = bound.as_mut().context("watermark bound")?;
        b.from = from.clone();
        // The bound never moves back (the newest rows may have been deleted, or the
        // table emptied): rows at or below the previous bound were exported before.
        let to = match (&b.to, &from) {
            (Some(now), Some(before)) => duck::greatest(conn, &b.ty, now, before)?,
            (Some(now), None) => now.clone(),
            (None, before) => before.clone().unwrap_or_default(),
        };
        b.to = Some(to.clone());
        let filter = duck::changed_filter(&b.column, &b.ty, from.as_deref(), &to, Duration::ZERO);
        if primary_key.is_empty() {
            let select =
                duck::changed_rows(t, &b.column, &b.ty, (from.as_deref(), &to), Duration::ZERO);
            // Without a key, only appended rows can be applied: the table must now
            // hold exactly the previous rows plus the changed ones, which is true
            // only when no row was updated or deleted (each would break the sum).
            let now = count("")?;
            let changed = count(&filter)?;
            let before = prev.and_then(|p| p.rows_total).unwrap_or(0);
            if now == before + changed {
                let f = copy("data", select)?;
                rec.rows = f.rows;
                rec.rows_total = Some(now);
                rec.files.push(f);
            } else {
                rec.mode = TableMode::FullCopy;
                rec.note = Some(format!(
                    "no primary key, and rows were updated or deleted ({now} rows now, {before} before and {changed} changed): copied whole"
                ));
            }
        } else {
            // Rows read again below the bound replace themselves by key.
            let overlap = d.watermark_overlap;
            if !overlap.is_zero() && from.is_some() && duck::is_time(&b.ty) {
                b.overlap_ms = Some(overlap.as_millis() as u64);
            }
            let select = duck::changed_rows(t, &b.column, &b.ty, (from.as_deref(), &to), overlap);
            let f = copy("data", select)?;
            rec.rows = f.rows;
            rec.files.push(f);
            let k = copy("keys", t.select(Some(&primary_key)))?;
            rec.rows_total = Some(k.rows);
            rec.files.push(k);
        }
    }
    match rec.mode {
        TableMode::Full | TableMode::FullCopy => {
            let f = copy("data", all)?;
            rec.rows = f.rows;
            rec.rows_total = Some(f.rows);
            rec.files.push(f);
        }
        TableMode::Incremental => {}
        TableMode::Skipped => {
            rec.rows_total = prev.and_then(|p| p.rows_total);
            // Keep the previous bound so a later configured watermark can resume.
            bound = prev.and_then(|p| p.watermark.clone());
        }
        TableMode::Excluded => {}
    }
    rec.watermark = bound;
    rec.fingerprint = match rec.mode {
        TableMode::Excluded => None,
        // The table is restored as the previous export left it.
        TableMode::Skipped => prev.and_then(|p| p.fingerprint.clone()),
        _ => Some(Fingerprint {
            method: FINGERPRINT_METHOD.into(),
            duckdb: duckdb_version.to_string(),
            value: duck::fingerprint(conn, &t.sql_name(), &t.columns, &t.types)?,
        }),
    };
    Ok(rec)
}

fn report(
    ctx: &Ctx,
    m: &Manifest,
    d: &DuckdbPlan,
    store: &dyn Store,
    elapsed: std::time::Duration,
    ledger_note: Option<super::run::LedgerNote>,
) -> Result<()> {
    let records = table_records(m)?;
    let rows: u64 = records.values().map(|r| r.rows).sum();
    let content: u64 = m.files.iter().map(|f| f.size).sum();
    if ctx.ui.json {
        return json_report(m, store, elapsed, ledger_note, json!({ "rows": rows }));
    }
    let differential = m.source.get("differential") == Some(&json!(true));
    ctx.ui.info(&format!(
        "{} export {} of {} stored in {}: {} tables, {rows} rows, {} Parquet, {} stored, in {:.1}s ({:.0} rows/s)",
        if differential {
            "differential"
        } else {
            m.scope.as_str()
        },
        m.id,
        d.database.display(),
        store.identity(),
        records.values().filter(|r| !r.files.is_empty()).count(),
        ui::size(content),
        ui::size(m.stored_bytes()),
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64().max(1e-9),
    ));
    if let Some(n) = ledger_note {
        ctx.ui.detail(&n.to_string());
    }
    crate::ui::out(&m.id.to_string())?;
    Ok(())
}

/// Whether a watermark bound (as text) is one that no value can lie above.
fn never_passed(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "nan" | "-nan" | "inf" | "infinity" | "+inf" | "+infinity"
    )
}

/// Whether every manifest of `chain` (chosen through the catalog) is still in
/// the store as recorded; when one is gone or changed, `note` says so and the
/// export is taken as a full one. A store that does not answer is an error
/// (run again), not a reason for a full export.
fn chain_stands(
    store: &dyn Store,
    trust: &crate::manifest::Trust,
    chain: &[&Manifest],
    note: &mut Option<String>,
) -> Result<bool> {
    for m in chain {
        match crate::manifest::catalog::current(store, trust, m) {
            Ok(fresh) if &fresh == *m => {}
            Ok(_) => {
                *note = Some(format!(
                    "export {}, which this one would build on, changed in the store since the catalog recorded it: taken as a full export",
                    m.id
                ));
                return Ok(false);
            }
            Err(e) if crate::exit::classify(&e) == Some(Code::Transient) => return Err(e),
            Err(e) => {
                *note = Some(format!(
                    "export {}, which this one would build on, cannot be read now ({e:#}): taken as a full export",
                    m.id
                ));
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BackupId;
    use time::OffsetDateTime;

    #[test]
    fn bounds_no_value_can_pass_are_recognised() {
        for v in ["nan", "NaN", "inf", "Infinity", "infinity", "+inf"] {
            assert!(never_passed(v), "{v}");
        }
        for v in ["1.5", "2026-11-22 10:00:00", "-infinity", "42"] {
            assert!(!never_passed(v), "{v}");
        }
    }

    fn t(schema: &str, name: &str) -> Table {
        Table {
            schema: schema.into(),
            name: name.into(),
            primary_key: vec![],
            columns: vec![],
            types: vec![],
            has_generated: false,
        }
    }

    fn collect(produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        produce(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn parquet_streams_through_a_pipe_and_failures_never_hang() {
        let conn = ::duckdb::Connection::open_in_memory().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (rows, bytes) = stream_parquet(
            &conn,
            "SELECT * FROM range(5000)",
            &dir.path().join("a"),
            collect,
        )
        .unwrap();
        assert_eq!(rows, 5000);
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
        assert!(!dir.path().join("a").exists(), "the pipe is removed");
        // Fails before DuckDB opens the pipe, and while it writes.
        for (i, bad) in [
            "SELECT * FROM no_such_table",
            "SELECT error('boom') FROM range(3)",
        ]
        .iter()
        .enumerate()
        {
            let err =
                stream_parquet(&conn, bad, &dir.path().join(format!("b{i}")), collect).unwrap_err();
            let msg = format!("{err:#}");
            assert!(
                msg.contains("no_such_table") || msg.contains("boom"),
                "{msg}"
            );
        }
    }

    #[test]
    fn stems_are_safe_and_unique() {
        let s = stems(&[t("main", "a b"), t("main", "a_b"), t("x", "y/z")]);
        assert_eq!(s, vec!["main.a_b", "main.a_b-1", "x.y_z"]);
    }

    #[test]
    fn keys_are_listable_by_kind_scope_and_date() {
        let at = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        let id = BackupId::new_v7(at);
        let k = object_key(Scope::Full, id, at, "main.t/data.parquet", ".enc");
        assert!(
            k.starts_with(&format!(
                "duckdb/full/{:04}/{:02}/{:02}/{id}/",
                at.year(),
                at.month() as u8,
                at.day()
            )),
            "{k}"
        );
        assert!(k.ends_with("main.t/data.parquet.enc"));
    }

    /// The catalog may still hold an export deleted behind bkp's back (older
    /// than its listing window): an incremental must not build on it.
    #[test]
    fn an_incremental_never_builds_on_a_chain_whose_manifest_is_gone() {
        use crate::manifest::tests::sample;
        let store = crate::store::memory::MemoryStore::new();
        let trust = crate::manifest::Trust::none();
        let t = OffsetDateTime::now_utc() - time::Duration::days(20);
        let full = sample(Kind::Duckdb, t);
        let inc = sample(Kind::Duckdb, t + time::Duration::hours(6));
        for m in [&full, &inc] {
            crate::manifest::write(&store, m, None).unwrap();
        }
        let mut note = None;
        assert!(chain_stands(&store, &trust, &[&full, &inc], &mut note).unwrap());
        assert!(note.is_none());
        store.delete(&full.key()).unwrap();
        assert!(!chain_stands(&store, &trust, &[&full, &inc], &mut note).unwrap());
        let note = note.expect("the reason is said");
        assert!(
            note.contains(&full.id.to_string()) && note.contains("full export"),
            "{note}"
        );
    }
}
