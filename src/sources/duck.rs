//! The DuckDB hot tier: open it without taking it from its owner, read its
//! catalog, and copy tables (or the rows changed since a watermark) to Parquet.
//!
//! DuckDB lets one process write a database file, or any number read it. bkp opens
//! the file read-only, so it never blocks another reader and never changes the
//! file; while it reads, no process can open the file for writing, so everything
//! read inside one transaction is one consistent state of the database. A file
//! that a writer holds open cannot be opened at all: bkp says which process holds
//! it (DuckDB's lock error names the PID) and fails with [`Code::UnsafeSource`],
//! optionally after waiting for the writer to let go.
//!
//! The schema is rebuilt from DuckDB's own catalog functions (`duckdb_tables()`,
//! `duckdb_views()`…) in the order `EXPORT DATABASE` writes it: schemas,
//! sequences, types, tables (creation order, so foreign keys resolve), macros,
//! views, indexes. Restoring it and loading the Parquet files gives the database
//! back, as `IMPORT DATABASE` would.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use ::duckdb::{AccessMode, Config, Connection};
use anyhow::{Context, Result};

use crate::exit::{coded, Code};

/// `ident` quoted for SQL: `"a""b"`.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `text` as an SQL string literal: `'it''s'`.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// Whether a DuckDB error says that another process holds the file's lock.
fn is_lock_conflict(msg: &str) -> bool {
    msg.contains("Could not set lock on file") || msg.contains("Conflicting lock")
}

/// Opens `path` read-only, waiting up to `wait` for a writer to let go of it.
pub fn open_read_only(
    path: &Path,
    wait: Duration,
    memory_limit: Option<&str>,
    threads: Option<u32>,
) -> Result<Connection> {
    if !path.is_file() {
        return Err(coded(
            Code::Config,
            format!(
                "DuckDB database {} does not exist or is not a file: check duckdb.database in the config",
                path.display()
            ),
        ));
    }
    let deadline = crate::units::deadline(wait);
    loop {
        let mut config = Config::default()
            .access_mode(AccessMode::ReadOnly)
            .and_then(|c| c.enable_autoload_extension(false))
            .context("failed to configure DuckDB")?;
        if let Some(m) = memory_limit {
            config = config
                .max_memory(m)
                .with_context(|| format!("duckdb.memory_limit {m:?} is not accepted by DuckDB"))?;
        }
        if let Some(t) = threads {
            config = config.threads(i64::from(t)).context("duckdb.threads")?;
        }
        match Connection::open_with_flags(path, config) {
            Ok(c) => return Ok(c),
            Err(e) if is_lock_conflict(&e.to_string()) => {
                if Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(250));
                    continue;
                }
                let detail = e.to_string();
                let holder = detail
                    .split("Conflicting lock is held in ")
                    .nth(1)
                    .map(|s| s.split(". See also").next().unwrap_or(s).trim().to_string())
                    .unwrap_or_else(|| detail.clone());
                return Err(coded(
                    Code::UnsafeSource,
                    format!(
                        "DuckDB database {} is held open for writing by another process ({holder}){}: bkp reads only a database no process is writing. Have that process close the database (or pause it) and run again, or set duckdb.lock_wait to wait for it",
                        path.display(),
                        if wait.is_zero() { String::new() } else { format!(", still after waiting {wait:?}") }
                    ),
                ));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "failed to open DuckDB database {} read-only",
                        path.display()
                    )
                })
            }
        }
    }
}

/// One base table of the database.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// The PRIMARY KEY columns, empty without one.
    pub primary_key: Vec<String>,
    pub columns: Vec<String>,
    /// The columns' SQL types, in the same order.
    pub types: Vec<String>,
    /// Whether the table also has generated columns (not in `columns`).
    pub has_generated: bool,
}

/// Types that Parquet cannot hold exactly (HUGEINT and UHUGEINT become DOUBLE,
/// INTERVAL loses microseconds, TIME WITH TIME ZONE its offset, UNION its tag):
/// such columns are exported as their text form, which DuckDB casts back exactly
/// on restore (a UNION's value, but not its member tag).
fn needs_text(ty: &str) -> bool {
    [
        "HUGEINT",
        "INTERVAL",
        "TIME WITH TIME ZONE",
        "UNION(",
        "BIGNUM",
    ]
    .iter()
    .any(|t| ty.contains(t))
}

impl Table {
    /// `SELECT` of every column, lossy types as text.
    pub fn select(&self, columns: Option<&[String]>) -> String {
        let mut list = Vec::new();
        let mut text = Vec::new();
        for (c, ty) in self.columns.iter().zip(&self.types) {
            if columns.is_some_and(|want| !want.contains(c)) {
                continue;
            }
            let q = quote_ident(c);
            if needs_text(ty) {
                text.push(format!("CAST({q} AS VARCHAR) AS {q}"));
                list.push(format!("CAST({q} AS VARCHAR) AS {q}"));
            } else {
                list.push(q);
            }
        }
        match columns {
            None if self.has_generated => {
                format!("SELECT {} FROM {}", list.join(", "), self.sql_name())
            }
            None if text.is_empty() => format!("SELECT * FROM {}", self.sql_name()),
            None => format!(
                "SELECT * REPLACE ({}) FROM {}",
                text.join(", "),
                self.sql_name()
            ),
            Some(_) => format!("SELECT {} FROM {}", list.join(", "), self.sql_name()),
        }
    }

    /// `schema.name` as config and manifests name it.
    pub fn key(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    pub fn sql_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// Strings of one query's first column.
fn strings(conn: &Connection, sql: &str) -> Result<Vec<String>> {
    let mut st = conn
        .prepare(sql)
        .with_context(|| format!("failed to read the DuckDB catalog ({sql})"))?;
    let rows = st.query_map([], |r| r.get::<_, Option<String>>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Some(s) = r? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The generated columns of `schema.table` (computed by the table, never stored).
pub fn generated_columns(conn: &Connection, schema: &str, table: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT column_name FROM information_schema.columns \
         WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? \
         AND is_generated <> 'NEVER'",
    )?;
    let rows = st.query_map([schema, table], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// The user's base tables, in creation order.
pub fn tables(conn: &Connection) -> Result<Vec<Table>> {
    let mut st = conn.prepare(
        "SELECT schema_name, table_name FROM duckdb_tables() \
         WHERE database_name = current_database() AND NOT internal AND NOT temporary \
         ORDER BY table_oid",
    )?;
    let names = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("failed to list the DuckDB tables")?;
    let mut out = Vec::new();
    for (schema, name) in names {
        let cols = |sql: &str| -> Result<Vec<String>> {
            let mut st = conn.prepare(sql)?;
            let rows = st.query_map([&schema, &name], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        };
        let primary_key = cols(
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
             WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
             AND constraint_type = 'PRIMARY KEY'",
        )
        .with_context(|| format!("failed to read the primary key of {schema}.{name}"))?;
        let columns = cols(
            "SELECT column_name FROM duckdb_columns() \
             WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
             ORDER BY column_index",
        )
        .with_context(|| format!("failed to read the columns of {schema}.{name}"))?;
        let types = cols(
            "SELECT data_type FROM duckdb_columns() \
             WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
             ORDER BY column_index",
        )
        .with_context(|| format!("failed to read the columns of {schema}.{name}"))?;
        // Generated columns are derived, not stored: the restored table computes
        // them again, and an INSERT may not name them.
        let generated = generated_columns(conn, &schema, &name)
            .with_context(|| format!("failed to read the columns of {schema}.{name}"))?;
        let (columns, types): (Vec<String>, Vec<String>) = columns
            .into_iter()
            .zip(types)
            .filter(|(c, _)| !generated.contains(c))
            .unzip();
        out.push(Table {
            schema,
            name,
            primary_key,
            columns,
            types,
            has_generated: !generated.is_empty(),
        });
    }
    Ok(out)
}

/// The database's schema: the SQL that recreates it (no data), in dependency order,
/// and its shape (the same without the sequences' current values), which tells
/// whether an incremental export can build on an earlier one.
pub struct Schema {
    pub sql: String,
    pub shape: String,
}

/// A sequence's position: restoring advances it to where the export saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub last_value: Option<i64>,
}

/// Every sequence of the database and its last value.
pub fn sequences(conn: &Connection) -> Result<Vec<Sequence>> {
    let mut st = conn.prepare(
        "SELECT schema_name, sequence_name, last_value FROM duckdb_sequences() \
         WHERE database_name = current_database() AND NOT temporary ORDER BY sequence_oid",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Sequence {
            schema: r.get(0)?,
            name: r.get(1)?,
            last_value: r.get(2)?,
        })
    })?;
    rows.collect::<std::result::Result<Vec<_>, _>>()
        .context("failed to read the DuckDB sequences")
}

/// Advances sequence `s` in `conn` until its last value is `s.last_value`.
pub fn advance_sequence(conn: &Connection, s: &Sequence) -> Result<()> {
    let Some(want) = s.last_value else {
        return Ok(());
    };
    let (next, inc, last): (i64, i64, Option<i64>) = conn.query_row(
        "SELECT start_value, increment_by, last_value FROM duckdb_sequences() \
         WHERE database_name = current_database() AND schema_name = ? AND sequence_name = ?",
        [&s.schema, &s.name],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let next = last.map_or(next, |l| l + inc);
    if inc == 0 {
        return Ok(());
    }
    let steps = (i128::from(want) - i128::from(next)) / i128::from(inc) + 1;
    if steps > 0 {
        let name = quote_literal(&qualified(&s.schema, &s.name));
        conn.query_row(
            &format!("SELECT max(nextval({name})) FROM range({steps})"),
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .with_context(|| format!("failed to advance sequence {}.{}", s.schema, s.name))?;
    }
    Ok(())
}

/// The SQL that recreates the database's schema (no data), in dependency order.
pub fn schema(conn: &Connection) -> Result<Schema> {
    let mut sql = String::new();
    let mut shape = String::new();
    let db = "database_name = current_database()";
    for s in strings(
        conn,
        &format!(
            "SELECT schema_name FROM duckdb_schemas() WHERE {db} AND NOT internal ORDER BY oid"
        ),
    )? {
        let _ = writeln!(sql, "CREATE SCHEMA {};", quote_ident(&s));
    }
    for s in strings(
        conn,
        &format!(
            "SELECT sql FROM duckdb_sequences() WHERE {db} AND NOT temporary ORDER BY sequence_oid"
        ),
    )? {
        let _ = writeln!(sql, "{s}");
        // `START n` moves with every nextval: the shape keeps the rest.
        let _ = writeln!(shape, "{}", s.split(" START ").next().unwrap_or(&s));
    }
    let mark = sql.len();
    // Enum types (the only user types DuckDB stores with their definition).
    let mut st = conn.prepare(&format!(
        "SELECT schema_name, type_name, list_transform(labels, lambda l: '''' || replace(l, '''', '''''') || '''') \
         FROM duckdb_types() WHERE {db} AND NOT internal AND logical_type = 'ENUM' ORDER BY type_oid"
    ))?;
    let enums = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, ::duckdb::types::Value>(2)?,
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("failed to read the DuckDB enum types")?;
    for (schema, name, labels) in enums {
        let labels: Vec<String> = match labels {
            ::duckdb::types::Value::List(v) => v
                .into_iter()
                .filter_map(|l| match l {
                    ::duckdb::types::Value::Text(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let _ = writeln!(
            sql,
            "CREATE TYPE {} AS ENUM ({});",
            qualified(&schema, &name),
            labels.join(", ")
        );
    }
    for s in strings(
        conn,
        &format!("SELECT sql FROM duckdb_tables() WHERE {db} AND NOT internal AND NOT temporary ORDER BY table_oid"),
    )? {
        let _ = writeln!(sql, "{s}");
    }
    let mut st = conn.prepare(&format!(
        "SELECT schema_name, function_name, function_type, array_to_string(parameters, ', '), macro_definition \
         FROM duckdb_functions() WHERE {db} AND NOT internal AND function_type IN ('macro', 'table_macro') \
         ORDER BY function_oid"
    ))?;
    let macros = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("failed to read the DuckDB macros")?;
    for (schema, name, kind, params, body) in macros {
        let Some(body) = body else { continue };
        let table = if kind == "table_macro" { "TABLE " } else { "" };
        let _ = writeln!(
            sql,
            "CREATE MACRO {}({}) AS {table}{body};",
            qualified(&schema, &name),
            params.unwrap_or_default()
        );
    }
    for s in strings(
        conn,
        &format!("SELECT sql FROM duckdb_views() WHERE {db} AND NOT internal AND NOT temporary ORDER BY view_oid"),
    )? {
        let _ = writeln!(sql, "{s}");
    }
    for s in strings(
        conn,
        &format!(
            "SELECT sql FROM duckdb_indexes() WHERE {db} AND sql IS NOT NULL ORDER BY index_oid"
        ),
    )? {
        let _ = writeln!(sql, "{s}");
    }
    shape.push_str(&sql[mark..]);
    Ok(Schema { sql, shape })
}

/// The highest value of `column` in `table` as text and the column's SQL type;
/// the value is `None` for a table with no non-NULL value there.
pub fn watermark_bound(
    conn: &Connection,
    table: &Table,
    column: &str,
) -> Result<(Option<String>, String)> {
    if !table.columns.iter().any(|c| c == column) {
        return Err(coded(
            Code::Config,
            format!(
                "duckdb.watermarks names column {column:?} for table {}, which has no such column (it has {}): fix the config",
                table.key(),
                table.columns.join(", ")
            ),
        ));
    }
    let sql = format!(
        "SELECT CAST(max({c}) AS VARCHAR), typeof(max({c})) FROM {t}",
        c = quote_ident(column),
        t = table.sql_name()
    );
    conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .with_context(|| format!("failed to read the watermark {column} of {}", table.key()))
}

/// Copies the rows of `select` to a ZSTD Parquet file at `path` (written once,
/// front to back, so `path` may be a pipe); returns the rows.
pub fn copy_to_parquet(conn: &Connection, select: &str, path: &Path) -> Result<u64> {
    let sql = format!(
        "COPY ({select}) TO {} (FORMAT PARQUET, COMPRESSION ZSTD, USE_TMP_FILE false)",
        quote_literal(&path.to_string_lossy())
    );
    let n: i64 = conn
        .query_row(&sql, [], |r| r.get(0))
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(n.max(0) as u64)
}

/// The greater of two watermark values of SQL type `ty`, as text.
pub fn greatest(conn: &Connection, ty: &str, a: &str, b: &str) -> Result<String> {
    conn.query_row(
        &format!(
            "SELECT CAST(greatest(CAST({} AS {ty}), CAST({} AS {ty})) AS VARCHAR)",
            quote_literal(a),
            quote_literal(b)
        ),
        [],
        |r| r.get(0),
    )
    .with_context(|| format!("failed to compare watermarks {a:?} and {b:?} ({ty})"))
}

/// ` WHERE …` selecting rows with `column` in `(from, to]` (`from` absent: up to `to`).
pub fn changed_filter(column: &str, ty: &str, from: Option<&str>, to: &str) -> String {
    let c = quote_ident(column);
    let lower = from
        .map(|f| format!("{c} > CAST({} AS {ty}) AND ", quote_literal(f)))
        .unwrap_or_default();
    format!(" WHERE {lower}{c} <= CAST({} AS {ty})", quote_literal(to))
}

/// `SELECT` of `table`'s rows with `column` in `(from, to]` (`from` absent: up to `to`).
pub fn changed_rows(table: &Table, column: &str, ty: &str, from: Option<&str>, to: &str) -> String {
    format!(
        "{}{}",
        table.select(None),
        changed_filter(column, ty, from, to)
    )
}

/// The DuckDB library version, e.g. `v2.0.0`.
pub fn version(conn: &Connection) -> String {
    conn.query_row("SELECT version()", [], |r| r.get::<_, String>(0))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified("main", "t"), "\"main\".\"t\"");
    }

    #[test]
    fn changed_rows_selects_a_half_open_interval() {
        let t = Table {
            schema: "main".into(),
            name: "signals".into(),
            primary_key: vec!["id".into()],
            columns: vec!["id".into(), "updated_at".into(), "big".into()],
            types: vec!["INTEGER".into(), "TIMESTAMP".into(), "HUGEINT".into()],
            has_generated: false,
        };
        assert_eq!(
            t.select(Some(&["big".to_string()])),
            "SELECT CAST(\"big\" AS VARCHAR) AS \"big\" FROM \"main\".\"signals\""
        );
        let q = changed_rows(
            &t,
            "updated_at",
            "TIMESTAMP",
            Some("2026-01-01 00:00:00"),
            "2026-01-02 00:00:00",
        );
        assert_eq!(
            q,
            "SELECT * REPLACE (CAST(\"big\" AS VARCHAR) AS \"big\") FROM \"main\".\"signals\" WHERE \"updated_at\" > CAST('2026-01-01 00:00:00' AS TIMESTAMP) AND \"updated_at\" <= CAST('2026-01-02 00:00:00' AS TIMESTAMP)"
        );
    }
}
