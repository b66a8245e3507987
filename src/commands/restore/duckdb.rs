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
//! recorded, and its content fingerprint the one the export took (when the same
//! DuckDB version took it). Only then is the file renamed into place, and an
//! existing target is replaced only with `--force`.
//!
//! What the store holds is untrusted: an altered `schema.sql` could ask DuckDB to
//! read or write any file, attach other databases, install extensions or change
//! its settings. So the new database is confined before the stored schema runs:
//! DuckDB may reach only that database's own files and the restore's scratch
//! directory, loads and installs no extension, and its configuration is locked.
//! A schema DuckDB refuses is damaged data ([`Code::Integrity`]), reported in
//! bkp's words only: DuckDB's message could quote a file the schema read. Names
//! from the manifest are checked before anything is downloaded (file names are
//! plain relative names, never used as paths; table names are only ever quoted
//! identifiers of tables the stored schema created).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use ::duckdb::Connection;
use anyhow::{Context, Result};
use serde_json::json;

use super::{Options, RestorePlan, Source};
use crate::chain;
use crate::exit::{coded, Code};
use crate::id::BackupId;
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

pub fn run(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a DuckDB restore needs an export")?;
    let done = opts.envelope(rp.kind).deliver(&src.work, src.ui, |file| {
        src.announce(m, opts.target);
        restore_database(src, m, file, opts.accept_content_mismatch)
    })?;
    let (target, elapsed) = (&done.target, done.elapsed);
    let Restored {
        counts,
        fingerprinted,
    } = done.made;
    let rows: u64 = counts.values().sum();
    if src.ui.json {
        return ui::document(json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "duckdb",
            "target": target.path.display().to_string(),
            "tables": counts,
            "rows": rows,
            "fingerprinted_tables": fingerprinted,
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    src.ui.info(&format!(
        "restored DuckDB export {} into {}: {} tables, {rows} rows, every count verified{}, in {:.1}s ({})",
        m.id,
        target.path.display(),
        counts.len(),
        match fingerprinted {
            0 => String::new(),
            n if n == counts.len() => " and every table's content".into(),
            n => format!(" and the content of {n} tables"),
        },
        elapsed.as_secs_f64(),
        ui::size(fs::metadata(&target.path).map(|m| m.len()).unwrap_or(0)),
    ));
    ui::print(&target.path.display().to_string())
}

/// Refuses to replace a file another process has open in DuckDB.
pub fn in_use(target: &Path) -> Result<()> {
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
/// (which must not exist) and verifies every table against the manifests: its
/// row count, and its content fingerprint, after every export applied. On
/// failure no file is left at `target`.
///
/// With `accept_mismatch`, a table whose content differs from its fingerprint
/// is restored and named in a warning instead.
pub fn restore_database(
    src: &Source,
    m: &Manifest,
    target: &Path,
    accept_mismatch: bool,
) -> Result<Restored> {
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
        .map(|e| crate::manifest::catalog::reread(src.store, src.trust, e))
        .collect::<Result<_>>()?;
    for e in &chain {
        check_manifest(e)?;
    }
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

    // Fetches one file of an export, verified, into the work directory. The local
    // name is the export's id and the file's place in the manifest, never the
    // file's name: names come from the store.
    let fetch = |m: &Manifest, name: &str| -> Result<PathBuf> {
        let i = m.files.iter().position(|f| f.name == name).ok_or_else(|| {
            coded(
                Code::Integrity,
                format!(
                    "export {} does not list {name}: its manifest was altered or is not a bkp export; nothing was restored",
                    m.id
                ),
            )
        })?;
        let entry = m.objects.get(i).ok_or_else(|| {
            coded(
                Code::Integrity,
                format!(
                    "export {} has no object for {name}: its manifest was altered or is not a bkp export; nothing was restored",
                    m.id
                ),
            )
        })?;
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
    let conn = open_confined(target, work.path())?;
    let database: String = conn
        .query_row("SELECT current_database()", [], |r| r.get(0))
        .with_context(|| format!("failed to read the name of {}", target.display()))?;
    let schema_file = fetch(&chain[0], SCHEMA_FILE)?;
    let schema = fs::read_to_string(&schema_file).map_err(|_| {
        coded(
            Code::Integrity,
            format!(
                "the stored schema of export {} is not UTF-8: the export was altered or is not a bkp export; nothing was restored",
                chain[0].id
            ),
        )
    })?;
    fs::remove_file(&schema_file).ok();
    // DuckDB's message is left out on purpose: it can quote what the schema read.
    if let Err(e) = conn.execute_batch(&schema) {
        return Err(schema_refused(chain[0].id, &e));
    }
    if let Some(omitted) = chain[0].source.get("omitted").and_then(|o| o.as_array()) {
        let names: Vec<String> = omitted
            .iter()
            .map(|o| {
                format!(
                    "{:?}",
                    o.get("object").and_then(|v| v.as_str()).unwrap_or("?")
                )
            })
            .collect();
        src.ui.warn(&format!(
            "export {} was taken without {}, which a restore could not recreate: the restored database does not have them",
            chain[0].id,
            names.join(", ")
        ));
    }
    // Tables in creation order, so that rows referenced by foreign keys come first.
    let mut tables: Vec<TableRecord> = export::table_records(&chain[0])?.into_values().collect();
    tables.sort_by_key(|r| r.position);
    check_schema_result(&conn, &database, chain[0].id, &tables)?;
    let real = |r: &TableRecord| qualified(&r.schema, &r.table);
    let ids: Vec<BackupId> = chain.iter().map(|e| e.id).collect();
    let mut checks = Checks {
        chain: &ids,
        accept_mismatch,
        unchecked: BTreeSet::new(),
        mismatched: Vec::new(),
    };

    let counts = if chain.len() == 1 {
        for r in &tables {
            apply_table(&conn, &real(r), r, |name| fetch(&chain[0], name))
                .with_context(|| format!("failed to restore table {}.{}", r.schema, r.table))?;
        }
        verify_tables(&conn, &chain[0], real, true, &mut checks)?
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
            // Counts after each export; the content once, at the end: a change
            // one export missed may come with a later one.
            verify_tables(&conn, e, staged, false, &mut checks)?;
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
        verify_tables(&conn, m, real, true, &mut checks)?
    };
    // Sequences continue where the newest export saw them.
    if let Some(v) = m.source.get("sequences") {
        let seqs: Vec<crate::sources::duck::Sequence> = serde_json::from_value(v.clone())
            .with_context(|| format!("manifest {} has unreadable sequences", m.key()))?;
        for s in &seqs {
            crate::sources::duck::advance_sequence(&conn, s)?;
        }
    }
    let version = crate::sources::duck::version(&conn);
    conn.execute_batch("CHECKPOINT")
        .with_context(|| format!("failed to checkpoint {}", target.display()))?;
    drop(conn);
    partial.0 = None;
    if !checks.unchecked.is_empty() {
        src.ui.warn(&format!(
            "some tables were checked by row count only: their content fingerprints ({}) were taken by another DuckDB version than this bkp's ({version})",
            checks.unchecked.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !checks.mismatched.is_empty() {
        src.ui.warn(&format!(
            "restored with --accept-content-mismatch: the rows of {} differ from what export {} read from the database ({})",
            checks.mismatched.join(", "),
            m.id,
            missed_change_advice(&checks, m.id)
        ));
    }
    let fingerprinted = export::table_records(m)?
        .iter()
        .filter(|&(key, r)| {
            !checks.mismatched.contains(key)
                && r.fingerprint.as_ref().is_some_and(|f| {
                    f.method == export::FINGERPRINT_METHOD
                        && f.duckdb == version
                        && version != crate::sources::duck::UNKNOWN_VERSION
                })
        })
        .count();
    Ok(Restored {
        counts,
        fingerprinted,
    })
}

/// What a DuckDB restore rebuilt and proved.
#[derive(Debug)]
pub struct Restored {
    /// Row counts by `schema.table` (excluded tables, restored empty, are left out).
    pub counts: BTreeMap<String, u64>,
    /// How many tables' content matched the fingerprint the export recorded.
    pub fingerprinted: usize,
}

/// Opens the new database `target` for a restore, confined before anything from
/// the store runs in it: DuckDB may then reach only `target`'s own files (the
/// database, its write-ahead log and spill directory) and those under `scratch`;
/// it installs and loads no extension and keeps no secret on disk; and its
/// configuration is locked, so that SQL run later cannot `SET` any of it back.
fn open_confined(target: &Path, scratch: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(target, crate::sources::duck::config()?)
        .with_context(|| format!("failed to create DuckDB database {}", target.display()))?;
    // The allowed directories can only be set while external access is on;
    // turning it off allows the open database's own files, then the lock keeps
    // every setting as it is.
    conn.execute_batch(&format!(
        "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
        quote_literal(&scratch.to_string_lossy())
    ))
    .with_context(|| {
        format!(
            "failed to confine DuckDB database {} to the restore's files",
            target.display()
        )
    })?;
    let (external, locked): (bool, bool) = conn
        .query_row(
            "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("failed to read DuckDB's settings")?;
    if external || !locked {
        anyhow::bail!(
            "DuckDB did not confine database {} (external access {external}, configuration locked {locked}): nothing was restored",
            target.display()
        );
    }
    Ok(conn)
}

/// DuckDB's classes of errors, as its messages begin (`Parser Error: …`).
const ERROR_CLASSES: &[&str] = &[
    "Binder",
    "Catalog",
    "Constraint",
    "Conversion",
    "Dependency",
    "Extension Autoloading",
    "HTTP",
    "Invalid Configuration",
    "Invalid Input",
    "IO",
    "Missing Extension",
    "Not implemented",
    "Out of Range",
    "Parser",
    "Permission",
    "Syntax",
    "TransactionContext",
];

/// The class of a DuckDB error when its message starts with one of DuckDB's
/// class names: unlike the rest of the message, a name from this fixed list
/// cannot quote data.
fn error_class(message: &str) -> Option<&'static str> {
    ERROR_CLASSES.iter().copied().find(|c| {
        message
            .strip_prefix(c)
            .is_some_and(|rest| rest.starts_with(" Error:"))
    })
}

/// The error for a stored schema DuckDB did not run: damaged data, said in bkp's
/// words. Nothing of DuckDB's message but its class is kept (here or in any log):
/// it could quote a file the schema tried to read.
fn schema_refused(id: BackupId, e: &::duckdb::Error) -> anyhow::Error {
    let class = error_class(&e.to_string())
        .map(|c| format!(" (DuckDB: {c} Error)"))
        .unwrap_or_default();
    coded(
        Code::Integrity,
        format!(
            "the stored schema of export {id} was refused{class}: a restore runs it confined to the new database and its scratch files, without extensions and with DuckDB's settings locked, and it failed there. A schema `bkp export` wrote needs no more: this export was altered, or made by another tool or DuckDB version; restore another one. Nothing was restored (DuckDB's message is left out: it could quote a file the schema read)"
        ),
    )
}

/// Refuses an export whose manifest `bkp export` could not have written: a file
/// name that is not a relative name of plain parts, a name listed twice, files
/// and objects that do not pair up, a table recorded under another table's name,
/// a table file the export does not list.
/// Checked before anything is downloaded.
fn check_manifest(e: &Manifest) -> Result<()> {
    let refuse = |what: String| {
        coded(
            Code::Integrity,
            format!(
                "export {} {what}: its manifest was altered or is not a bkp export; nothing was restored",
                e.id
            ),
        )
    };
    if e.files.len() != e.objects.len() {
        return Err(refuse(format!(
            "lists {} files but {} objects",
            e.files.len(),
            e.objects.len()
        )));
    }
    let mut names = BTreeSet::new();
    for f in &e.files {
        if !export::is_file_name(&f.name) {
            return Err(refuse(format!(
                "lists a file named {:?}, which is not a relative name of plain parts",
                f.name
            )));
        }
        if !names.insert(f.name.as_str()) {
            return Err(refuse(format!("lists file {} twice", f.name)));
        }
    }
    for (key, r) in export::table_records(e)? {
        if key != format!("{}.{}", r.schema, r.table) {
            return Err(refuse(format!(
                "records table {key:?} as table {:?} of schema {:?}",
                r.table, r.schema
            )));
        }
        if let Some(f) = r.files.iter().find(|f| !names.contains(f.name.as_str())) {
            return Err(refuse(format!(
                "records file {:?} for table {key}, which it does not list",
                f.name
            )));
        }
    }
    Ok(())
}

/// Refuses a stored schema that left the connection elsewhere than in the new
/// database `database` (another database attached, or made the default), or
/// that does not create a table its export `id` records: rows would be restored
/// into the wrong place, and names from the manifest must name tables of the
/// new database.
fn check_schema_result(
    conn: &Connection,
    database: &str,
    id: BackupId,
    tables: &[TableRecord],
) -> Result<()> {
    let (current, others): (String, i64) = conn
        .query_row(
            "SELECT current_database(), \
             (SELECT count(*) FROM duckdb_databases() WHERE NOT internal AND database_name <> ?)",
            [database],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("failed to list the attached DuckDB databases")?;
    if current != database || others != 0 {
        return Err(coded(
            Code::Integrity,
            format!(
                "the stored schema of export {id} was refused: it attached or switched to another database, which `bkp export` never writes: the export was altered or is not a bkp export; nothing was restored"
            ),
        ));
    }
    for r in tables {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM duckdb_tables() \
                 WHERE database_name = ? AND schema_name = ? AND table_name = ? AND NOT temporary",
                [database, &r.schema, &r.table],
                |row| row.get(0),
            )
            .context("failed to list the restored tables")?;
        if n != 1 {
            return Err(coded(
                Code::Integrity,
                format!(
                    "export {id} records table {:?} in schema {:?}, which its stored schema does not create: the export was altered or is not a bkp export; nothing was restored",
                    r.table, r.schema
                ),
            ));
        }
    }
    Ok(())
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

/// How a restore checks the tables it rebuilt.
struct Checks<'a> {
    /// The exports of the chain, oldest (the full export) first.
    chain: &'a [BackupId],
    /// Restore a table whose content differs from its fingerprint, with a
    /// warning, rather than refusing the restore.
    accept_mismatch: bool,
    /// Fingerprints this DuckDB cannot compare (taken by another version).
    unchecked: BTreeSet<String>,
    /// Tables restored although their content differs (with `accept_mismatch`).
    mismatched: Vec<String>,
}

/// What to do when an export of a chain missed a change.
fn missed_change_advice(checks: &Checks, e: BackupId) -> String {
    let earlier: Vec<String> = checks
        .chain
        .iter()
        .take_while(|id| **id != e)
        .map(|id| id.to_string())
        .collect();
    match earlier.last() {
        None => "the export's files do not hold the rows its database had: restore another export (`bkp list --kind duckdb`)".into(),
        Some(before) => format!(
            "an export of this chain missed a change: most likely a row updated without its watermark column moving, or written with a watermark at or below the previous export's bound (stamped late: see duckdb.watermark_overlap). An earlier export of the chain ({}) may restore exactly: `bkp restore {before} --kind duckdb --target FILE`. Take `bkp export --full` now",
            earlier.join(", ")
        ),
    }
}

/// Checks every table (in the table `name` gives) against export `e`'s records:
/// its row count, and, with `fingerprints`, its content fingerprint when `e`
/// recorded one with this DuckDB version (another version's `hash()` may
/// differ: such tables are only counted, and `checks.unchecked` says which
/// versions).
fn verify_tables(
    conn: &Connection,
    e: &Manifest,
    name: impl Fn(&TableRecord) -> String,
    fingerprints: bool,
    checks: &mut Checks,
) -> Result<BTreeMap<String, u64>> {
    let version = crate::sources::duck::version(conn);
    let mut counts = BTreeMap::new();
    for (key, r) in &export::table_records(e)? {
        let Some(want) = r.rows_total else { continue };
        let got: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", name(r)), [], |row| {
            row.get(0)
        })?;
        let got = got.max(0) as u64;
        if got != want {
            let why = if r.primary_key.is_empty() && r.mode == TableMode::Incremental {
                " (the table has no primary key, so rows updated between exports were added again: configure duckdb.primary_keys for it, or export it without a watermark)".to_string()
            } else if r.mode == TableMode::Incremental {
                format!(": {}", missed_change_advice(checks, e.id))
            } else {
                String::new()
            };
            return Err(coded(
                Code::Integrity,
                format!(
                    "table {key} has {got} rows after applying export {}, but the manifest records {want}{why}; nothing was restored",
                    e.id,
                ),
            ));
        }
        counts.insert(key.clone(), got);
        let Some(f) = r.fingerprint.as_ref().filter(|_| fingerprints) else {
            continue;
        };
        if f.method != export::FINGERPRINT_METHOD
            || f.duckdb != version
            || version == crate::sources::duck::UNKNOWN_VERSION
        {
            checks
                .unchecked
                .insert(format!("{:?} by DuckDB {:?}", f.method, f.duckdb));
            continue;
        }
        let (columns, types, _) = crate::sources::duck::stored_columns(conn, &r.schema, &r.table)?;
        let now = crate::sources::duck::fingerprint(conn, &name(r), &columns, &types)?;
        if now == f.value {
            continue;
        }
        if checks.accept_mismatch {
            checks.mismatched.push(key.clone());
            continue;
        }
        return Err(coded(
            Code::Integrity,
            format!(
                "table {key} holds other rows after the restore than export {} read from the database (content fingerprint {now}, recorded {:?}): {}; nothing was restored. To restore these rows anyway, pass --accept-content-mismatch",
                e.id,
                f.value,
                missed_change_advice(checks, e.id)
            ),
        ));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(p: &Path) -> String {
        quote_literal(&p.to_string_lossy())
    }

    #[test]
    fn a_confined_database_reaches_only_its_own_files_and_the_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let (scratch, outside, db) = (
            dir.path().join("scratch"),
            dir.path().join("outside"),
            dir.path().join("db"),
        );
        for d in [&scratch, &outside, &db] {
            fs::create_dir(d).unwrap();
        }
        let secret = outside.join("secret.txt");
        fs::write(&secret, "TOPSECRET-1234\n").unwrap();
        let parquet = scratch.join("rows.parquet");
        Connection::open_in_memory()
            .unwrap()
            .execute_batch(&format!(
                "COPY (SELECT range AS id FROM range(5)) TO {} (FORMAT PARQUET)",
                lit(&parquet)
            ))
            .unwrap();

        let conn = open_confined(&db.join("new.duckdb"), &scratch).unwrap();
        // What a restore does still works: Parquet from the scratch, a staging
        // database there, sequences, a checkpoint.
        conn.execute_batch(&format!(
            "CREATE SEQUENCE s; CREATE TABLE t (id BIGINT PRIMARY KEY);
             INSERT INTO t SELECT * FROM read_parquet({});
             ATTACH {} AS bkp_stage; CREATE TABLE bkp_stage.main.t0 AS SELECT * FROM t;
             DETACH bkp_stage; SELECT nextval('s'); CHECKPOINT;",
            lit(&parquet),
            lit(&scratch.join("stage.duckdb"))
        ))
        .unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5);

        // Nothing else does.
        for sql in [
            format!("COPY (SELECT 42) TO {}", lit(&outside.join("pwned.csv"))),
            format!(
                "COPY (SELECT 42) TO {}",
                lit(&scratch.join("../outside/pwned.csv"))
            ),
            format!("SELECT * FROM read_text({})", lit(&secret)),
            format!("SELECT * FROM read_csv({})", lit(&secret)),
            format!("SELECT * FROM read_blob({})", lit(&secret)),
            format!("SELECT * FROM sniff_csv({})", lit(&secret)),
            format!("SELECT * FROM {}", lit(&secret)),
            format!("SELECT * FROM glob({})", lit(&outside.join("*"))),
            format!("ATTACH {} AS other", lit(&outside.join("other.duckdb"))),
            "SET enable_external_access = true".into(),
            "SET lock_configuration = false".into(),
            "RESET lock_configuration".into(),
            "SET allowed_directories = ['/']".into(),
            format!("SET allowed_paths = [{}]", lit(&secret)),
            format!("SET temp_directory = {}", lit(&outside)),
            format!("SET extension_directory = {}", lit(&outside)),
            "SET autoinstall_known_extensions = true".into(),
            "SET autoload_known_extensions = true".into(),
            "INSTALL httpfs".into(),
            "LOAD httpfs".into(),
            format!("LOAD {}", lit(&outside.join("x.duckdb_extension"))),
        ] {
            let e = conn.execute_batch(&sql);
            assert!(e.is_err(), "{sql} was run");
        }
        let left: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("secret.txt")]);
    }

    /// An export manifest with `files` (one object each) and a table whose files
    /// are `table_files`.
    fn manifest(files: &[&str], table_files: &[&str]) -> Manifest {
        let object = |n: &str| {
            serde_json::json!({"key": format!("duckdb/full/2026/01/01/x/{n}"), "size": 1,
                "sha256": "00", "content_bytes": 1, "content_sha256": "00"})
        };
        let table_file = |n: &&str| {
            serde_json::json!({"role": "data", "name": n, "object": "o", "rows": 1,
                "size": 1, "sha256": "00"})
        };
        serde_json::from_value(serde_json::json!({
            "schema": "bkp.manifest/1.0",
            "id": "01a207f0-7dcc-7687-9a68-69f5ad2607fd",
            "kind": "duckdb", "scope": "full", "operation": "export", "status": "completed",
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00Z",
            "host": "h", "bkp_version": "0", "retention_days": 1,
            "compression": {"algorithm": "none"}, "encryption": null,
            "objects": files.iter().map(|n| object(n)).collect::<Vec<_>>(),
            "files": files.iter().map(|n| serde_json::json!({"name": n, "size": 1, "sha256": "00"})).collect::<Vec<_>>(),
            "source": {"tables": {"main.t": {
                "schema": "main", "table": "t", "mode": "full", "rows": 1, "rows_total": 1,
                "primary_key": [], "watermark": null,
                "files": table_files.iter().map(table_file).collect::<Vec<_>>(),
            }}},
        }))
        .unwrap()
    }

    #[test]
    fn manifests_bkp_could_not_have_written_are_refused() {
        let data = "main.t/data.parquet";
        check_manifest(&manifest(&[SCHEMA_FILE, data], &[data])).unwrap();
        let mut unpaired = manifest(&[SCHEMA_FILE, data], &[data]);
        unpaired.objects.pop();
        let mut renamed = manifest(&[SCHEMA_FILE, data], &[data]);
        let tables = renamed.source.get_mut("tables").unwrap();
        let r = tables.as_object_mut().unwrap().remove("main.t").unwrap();
        tables.as_object_mut().unwrap().insert("main.u".into(), r);
        for (m, what) in [
            (
                manifest(&[SCHEMA_FILE, "../x"], &["../x"]),
                "named \"../x\"",
            ),
            (
                manifest(&[SCHEMA_FILE, "/etc/passwd"], &[]),
                "named \"/etc/passwd\"",
            ),
            (manifest(&[SCHEMA_FILE, ""], &[]), "named \"\""),
            (manifest(&[SCHEMA_FILE, data, data], &[data]), "twice"),
            (manifest(&[SCHEMA_FILE], &[data]), "does not list"),
            (unpaired, "2 files but 1 objects"),
            (renamed, "records table \"main.u\" as table \"t\""),
        ] {
            let e = check_manifest(&m).unwrap_err();
            assert_eq!(crate::exit::classify(&e), Some(Code::Integrity), "{e:#}");
            assert!(format!("{e:#}").contains(what), "{e:#}");
        }
    }

    #[test]
    fn only_duckdb_error_classes_are_kept() {
        assert_eq!(
            error_class("Permission Error: Cannot access file \"/x\""),
            Some("Permission")
        );
        assert_eq!(
            error_class("Invalid Input Error: TOPSECRET"),
            Some("Invalid Input")
        );
        assert_eq!(error_class("Invalid Error: x"), None);
        assert_eq!(error_class("TOPSECRET Error: x"), None);
        assert_eq!(error_class("TOPSECRET"), None);
    }
}
