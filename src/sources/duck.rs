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

/// DuckDB's configuration for every database bkp opens: it installs and loads no
/// extension on its own (a run never downloads anything), trusts no community
/// extension and keeps no secret on disk.
pub fn config() -> Result<Config> {
    Config::default()
        .enable_autoload_extension(false)
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .and_then(|c| c.with("allow_community_extensions", "false"))
        .and_then(|c| c.with("allow_persistent_secrets", "false"))
        .context("failed to configure DuckDB")
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
        let mut config = config()?
            .access_mode(AccessMode::ReadOnly)
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
                    crate::failpoint::pause("lock-wait");
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

/// The stored columns of `schema.table` (generated ones are computed by the
/// table, never stored, and an INSERT may not name them) and their SQL types, in
/// the table's order; and whether the table also has generated columns.
pub fn stored_columns(
    conn: &Connection,
    schema: &str,
    table: &str,
) -> Result<(Vec<String>, Vec<String>, bool)> {
    let mut st = conn.prepare(
        "SELECT column_name, data_type FROM duckdb_columns() \
         WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
         ORDER BY column_index",
    )?;
    let all = st
        .query_map([schema, table], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("failed to read the columns of {schema}.{table}"))?;
    let generated = generated_columns(conn, schema, table)
        .with_context(|| format!("failed to read the columns of {schema}.{table}"))?;
    let (columns, types) = all
        .into_iter()
        .filter(|(c, _)| !generated.contains(c))
        .unzip();
    Ok((columns, types, !generated.is_empty()))
}

/// An order-independent fingerprint of the rows of `from` (a table, quoted) over
/// its stored `columns` of `types`: the sum of every row's `hash()`, so equal
/// multisets of rows give equal sums whatever their order, and a changed,
/// missing or extra row changes it. A UNION is hashed as its text, the form in
/// which an export keeps it. DuckDB's hash is stable within one DuckDB version,
/// so a fingerprint is compared only by the version that took it.
pub fn fingerprint(
    conn: &Connection,
    from: &str,
    columns: &[String],
    types: &[String],
) -> Result<String> {
    let args: Vec<String> = columns
        .iter()
        .zip(types)
        .map(|(c, ty)| {
            if ty.contains("UNION(") {
                format!("CAST({} AS VARCHAR)", quote_ident(c))
            } else {
                quote_ident(c)
            }
        })
        .collect();
    if args.is_empty() {
        anyhow::bail!("{from} has no stored column to fingerprint");
    }
    conn.query_row(
        &format!(
            // Qualified: a macro of the database could shadow `hash` or `sum`.
            "SELECT CAST(coalesce(system.main.sum(system.main.hash({})), 0) AS VARCHAR) FROM {from}",
            args.join(", ")
        ),
        [],
        |r| r.get(0),
    )
    .with_context(|| format!("failed to fingerprint the rows of {from}"))
}

/// Foreign keys: (schema, referencing table, referenced table); DuckDB keeps
/// both tables in one schema.
pub fn foreign_keys(conn: &Connection) -> Result<Vec<(String, String, String)>> {
    let mut st = conn.prepare(
        "SELECT schema_name, table_name, referenced_table FROM duckdb_constraints() \
         WHERE database_name = current_database() AND constraint_type = 'FOREIGN KEY' \
         AND referenced_table IS NOT NULL ORDER BY table_oid, constraint_index",
    )?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect::<std::result::Result<Vec<_>, _>>()
        .context("failed to read the DuckDB foreign keys")
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
        let (columns, types, has_generated) = stored_columns(conn, &schema, &name)?;
        out.push(Table {
            schema,
            name,
            primary_key,
            columns,
            types,
            has_generated,
        });
    }
    Ok(out)
}

/// The database's schema: the statements that recreate it (no data), in
/// dependency order, and what a restore could not recreate, left out.
pub struct Schema {
    pub statements: Vec<Statement>,
    /// Objects left out (`view main.v`), each with why: see [`replay`].
    pub omitted: Vec<(String, String)>,
}

/// One statement of a schema.
pub struct Statement {
    /// The object it creates, e.g. `view main.v`.
    pub what: String,
    pub sql: String,
    /// Its part of the schema's shape (the sequences without their current
    /// value, no schemas), which tells whether an incremental export can build
    /// on an earlier one.
    pub shape: Option<String>,
}

impl Schema {
    /// The SQL that recreates the schema, one statement per line.
    pub fn sql(&self) -> String {
        self.statements.iter().fold(String::new(), |mut out, s| {
            let _ = writeln!(out, "{}", s.sql);
            out
        })
    }

    /// The schema without what moves on its own (sequence values).
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for s in self.statements.iter().filter_map(|s| s.shape.as_ref()) {
            let _ = writeln!(out, "{s}");
        }
        out
    }

    /// Whether [`replay`] left table `key` (`schema.table`) out.
    pub fn omits_table(&self, key: &str) -> bool {
        self.omitted
            .iter()
            .any(|(what, _)| *what == format!("table {key}"))
    }
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

/// The most values [`advance_sequence`] draws from one sequence. DuckDB can
/// neither set a sequence's value nor restart it under a table that uses it,
/// so a sequence is advanced by drawing values (tens of millions a second):
/// a manifest that puts a sequence further than this past where its schema
/// starts it is refused rather than spun on for years.
pub const MAX_SEQUENCE_STEPS: i128 = 1 << 30;

/// Advances sequence `s` in `conn` until its last value is `s.last_value`:
/// at most [`MAX_SEQUENCE_STEPS`] draws, else an error that says why.
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
    if inc == 0 {
        return Ok(());
    }
    let next = last.map_or(i128::from(next), |l| i128::from(l) + i128::from(inc));
    let steps = (i128::from(want) - next) / i128::from(inc) + 1;
    if steps > MAX_SEQUENCE_STEPS {
        return Err(coded(
            Code::Unsupported,
            format!(
                "sequence {}.{} was at {want} when the export was taken, {steps} values past where its full export's schema starts it: more than bkp draws to advance a sequence ({MAX_SEQUENCE_STEPS}; DuckDB cannot set a sequence's value). Nothing was restored. A genuine sequence that far from its full export is restored from a newer full export (`bkp export --full` records where the sequence is)",
                s.schema, s.name
            ),
        ));
    }
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

/// The items of a list of text (`None` for an item that is not text); empty for
/// a value that is not a list.
fn text_list(v: ::duckdb::types::Value) -> Vec<Option<String>> {
    match v {
        ::duckdb::types::Value::List(v) => v
            .into_iter()
            .map(|l| match l {
                ::duckdb::types::Value::Text(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// (object, SQL) pairs of a catalog query whose columns are schema, name, sql.
fn definitions(conn: &Connection, kind: &str, sql: &str) -> Result<Vec<(String, String)>> {
    let mut st = conn
        .prepare(sql)
        .with_context(|| format!("failed to read the DuckDB catalog ({sql})"))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (schema, name, sql) =
            r.with_context(|| format!("failed to read the DuckDB {kind}s"))?;
        if let Some(sql) = sql {
            out.push((format!("{kind} {schema}.{name}"), sql));
        }
    }
    Ok(out)
}

/// The SQL that recreates the database's schema (no data), in dependency order.
pub fn schema(conn: &Connection) -> Result<Schema> {
    let db = "database_name = current_database()";
    let mut statements: Vec<(String, String)> = Vec::new();
    let mut omitted = Vec::new();
    for s in strings(
        conn,
        &format!(
            "SELECT schema_name FROM duckdb_schemas() WHERE {db} AND NOT internal ORDER BY oid"
        ),
    )? {
        statements.push((
            format!("schema {s}"),
            format!("CREATE SCHEMA {};", quote_ident(&s)),
        ));
    }
    let sequences = definitions(
        conn,
        "sequence",
        &format!("SELECT schema_name, sequence_name, sql FROM duckdb_sequences() WHERE {db} AND NOT temporary ORDER BY sequence_oid"),
    )?;
    let first_sequence = statements.len();
    statements.extend(sequences);
    let mark = statements.len();
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
        let labels: Vec<String> = text_list(labels).into_iter().flatten().collect();
        statements.push((
            format!("type {schema}.{name}"),
            format!(
                "CREATE TYPE {} AS ENUM ({});",
                qualified(&schema, &name),
                labels.join(", ")
            ),
        ));
    }
    statements.extend(definitions(
        conn,
        "table",
        &format!("SELECT schema_name, table_name, sql FROM duckdb_tables() WHERE {db} AND NOT internal AND NOT temporary ORDER BY table_oid"),
    )?);
    let (macros, refused) = macros(conn)?;
    statements.extend(macros);
    omitted.extend(refused);
    statements.extend(definitions(
        conn,
        "view",
        &format!("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE {db} AND NOT internal AND NOT temporary ORDER BY view_oid"),
    )?);
    statements.extend(definitions(
        conn,
        "index",
        &format!("SELECT schema_name, index_name, sql FROM duckdb_indexes() WHERE {db} ORDER BY index_oid"),
    )?);
    let statements = statements
        .into_iter()
        .enumerate()
        .map(|(i, (what, sql))| {
            let shape = match i {
                // `START n` moves with every nextval: the shape keeps the rest.
                i if i >= first_sequence && i < mark => {
                    Some(sql.split(" START ").next().unwrap_or(&sql).to_string())
                }
                i if i >= mark => Some(sql.clone()),
                _ => None,
            };
            Statement { what, sql, shape }
        })
        .collect();
    Ok(Schema {
        statements,
        omitted,
    })
}

/// The macros' definitions. DuckDB lists each overload of a macro as its own
/// row; they are created together, as `CREATE MACRO m(a) AS a, (a, b) AS a + b`,
/// since a second `CREATE MACRO m` would fail. Parameters keep their types.
/// Parameter defaults (`b := 5`) are not in DuckDB's catalog functions, so a
/// restore could not give them back: a macro that has them is left out, and
/// returned with why in the second list.
#[allow(clippy::type_complexity)]
fn macros(conn: &Connection) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
    let mut st = conn.prepare(
        "SELECT schema_name, function_name, function_type, parameters, parameter_types, macro_definition \
         FROM duckdb_functions() WHERE database_name = current_database() AND NOT internal \
         AND function_type IN ('macro', 'table_macro') ORDER BY function_oid",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, ::duckdb::types::Value>(3)?,
                r.get::<_, ::duckdb::types::Value>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("failed to read the DuckDB macros")?;
    // Overloads, grouped by macro in the order the macros were created: the
    // text of each, and its number of parameters.
    type Overloads = Vec<(String, usize)>;
    let mut grouped: Vec<((String, String, String), Overloads)> = Vec::new();
    for (schema, name, kind, params, types, body) in rows {
        let Some(body) = body else { continue };
        let table = if kind == "table_macro" { "TABLE " } else { "" };
        let params = text_list(params);
        let types = text_list(types);
        let list: Vec<String> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = quote_ident(p.as_deref().unwrap_or_default());
                match types.get(i).cloned().flatten() {
                    Some(ty) => format!("{p} {ty}"),
                    None => p,
                }
            })
            .collect();
        let overload = (
            format!("({}) AS {table}{body}", list.join(", ")),
            params.len(),
        );
        let key = (schema, name, kind);
        match grouped.iter_mut().find(|(k, _)| *k == key) {
            Some((_, overloads)) => overloads.push(overload),
            None => grouped.push((key, vec![overload])),
        }
    }
    // Probes run on their own connection: a failed statement would abort the
    // export's transaction.
    let probe = conn
        .try_clone()
        .context("failed to open a second DuckDB connection")?;
    let mut out = Vec::new();
    let mut refused = Vec::new();
    'macros: for ((schema, name, kind), overloads) in grouped {
        let q = qualified(&schema, &name);
        // A call with fewer arguments than any overload takes binds only when
        // parameters have defaults. EXPLAIN binds the call without running it.
        let most = overloads.iter().map(|(_, n)| *n).max().unwrap_or(0);
        for k in (0..most).filter(|k| !overloads.iter().any(|(_, n)| n == k)) {
            let args = vec!["NULL"; k].join(", ");
            let call = if kind == "table_macro" {
                format!("EXPLAIN SELECT * FROM {q}({args})")
            } else {
                format!("EXPLAIN SELECT {q}({args})")
            };
            if probe
                .prepare(&call)
                .and_then(|mut st| st.query([]).map(|_| ()))
                .is_ok()
            {
                refused.push((
                    format!("macro {schema}.{name}"),
                    "it has parameter defaults, which DuckDB does not show in its catalog: recreate it without them (an overload with fewer parameters does the same)".to_string(),
                ));
                continue 'macros;
            }
        }
        // A table macro's query is parenthesised when it has overloads: the
        // comma before the next one would otherwise read as a join.
        let text = if overloads.len() > 1 && kind == "table_macro" {
            overloads
                .iter()
                .map(|(o, _)| {
                    let (head, query) = o.split_once(" AS TABLE ").unwrap_or((o, ""));
                    format!("{head} AS TABLE ({query})")
                })
                .collect::<Vec<_>>()
        } else {
            overloads.into_iter().map(|(o, _)| o).collect()
        };
        out.push((
            format!("macro {schema}.{name}"),
            format!("CREATE MACRO {q}{};", text.join(", ")),
        ));
    }
    Ok((out, refused))
}

/// Proves that a restore can recreate `schema` and `tables` exactly: runs every
/// statement in a new in-memory database configured as a restore's is (no
/// extension installed or loaded, no file outside the database reachable), then
/// checks that each table comes back with the same stored columns and types.
/// What fails is left out of the schema and added to `schema.omitted`, with
/// DuckDB's reason: so is what depends on it (a view over an omitted table fails
/// in turn). The export then stores everything else and says what it left out.
pub fn replay(schema: &mut Schema, tables: &[Table]) -> Result<()> {
    // A table that comes back with other columns is left out, and what was
    // created on it must then be replayed again without it.
    loop {
        let conn = Connection::open_in_memory_with_flags(config()?)
            .context("failed to open an in-memory DuckDB database")?;
        conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")
            .context("failed to confine an in-memory DuckDB database")?;
        let mut kept = Vec::new();
        for st in std::mem::take(&mut schema.statements) {
            match conn.execute_batch(&st.sql) {
                Ok(()) => kept.push(st),
                Err(e) => {
                    let why = e.to_string();
                    let why = why.lines().next().unwrap_or_default().to_string();
                    schema.omitted.push((st.what, why));
                }
            }
        }
        schema.statements = kept;
        let mut again = false;
        for t in tables {
            if schema.omits_table(&t.key()) {
                continue;
            }
            let (columns, types, _) = stored_columns(&conn, &t.schema, &t.name)?;
            if columns != t.columns || types != t.types {
                let what = format!("table {}", t.key());
                schema.statements.retain(|s| s.what != what);
                schema.omitted.push((
                    what,
                    format!(
                        "its columns come back as ({}) instead of ({})",
                        pairs(&columns, &types),
                        pairs(&t.columns, &t.types)
                    ),
                ));
                again = true;
            }
        }
        if !again {
            return Ok(());
        }
    }
}

fn pairs(columns: &[String], types: &[String]) -> String {
    columns
        .iter()
        .zip(types)
        .map(|(c, t)| format!("{c} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
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

/// ` WHERE …` selecting rows with `column` in `(from - overlap, to]` (`from`
/// absent: up to `to`). An overlap applies to time watermarks only.
pub fn changed_filter(
    column: &str,
    ty: &str,
    from: Option<&str>,
    to: &str,
    overlap: Duration,
) -> String {
    let c = quote_ident(column);
    let back = if overlap.is_zero() || !is_time(ty) {
        String::new()
    } else {
        format!(" - INTERVAL ({}) MICROSECOND", overlap.as_micros())
    };
    let lower = from
        .map(|f| format!("{c} > CAST({} AS {ty}){back} AND ", quote_literal(f)))
        .unwrap_or_default();
    format!(" WHERE {lower}{c} <= CAST({} AS {ty})", quote_literal(to))
}

/// Whether a watermark of SQL type `ty` is a point in time (an overlap applies).
pub fn is_time(ty: &str) -> bool {
    ty == "DATE" || ty.starts_with("TIMESTAMP")
}

/// `SELECT` of `table`'s rows with `column` in `(from - overlap, to]` (`from`
/// absent: up to `to`).
pub fn changed_rows(
    table: &Table,
    column: &str,
    ty: &str,
    (from, to): (Option<&str>, &str),
    overlap: Duration,
) -> String {
    format!(
        "{}{}",
        table.select(None),
        changed_filter(column, ty, from, to, overlap)
    )
}

/// The DuckDB library version, e.g. `v2.0.0`, or `unknown`. Read from
/// `pragma_version()`: a macro of the database could shadow `version()`.
pub fn version(conn: &Connection) -> String {
    conn.query_row("SELECT library_version FROM pragma_version()", [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap_or_else(|_| UNKNOWN_VERSION.into())
}

/// What [`version`] gives when DuckDB does not say: never a match for anything.
pub const UNKNOWN_VERSION: &str = "unknown";

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
            (Some("2026-01-01 00:00:00"), "2026-01-02 00:00:00"),
            Duration::ZERO,
        );
        assert_eq!(
            q,
            "SELECT * REPLACE (CAST(\"big\" AS VARCHAR) AS \"big\") FROM \"main\".\"signals\" WHERE \"updated_at\" > CAST('2026-01-01 00:00:00' AS TIMESTAMP) AND \"updated_at\" <= CAST('2026-01-02 00:00:00' AS TIMESTAMP)"
        );
        // An overlap reads time watermarks again below the bound, not numbers.
        assert_eq!(
            changed_filter("at", "TIMESTAMP WITH TIME ZONE", Some("x"), "y", Duration::from_secs(90)),
            " WHERE \"at\" > CAST('x' AS TIMESTAMP WITH TIME ZONE) - INTERVAL (90000000) MICROSECOND AND \"at\" <= CAST('y' AS TIMESTAMP WITH TIME ZONE)"
        );
        assert_eq!(
            changed_filter("n", "BIGINT", Some("1"), "2", Duration::from_secs(90)),
            " WHERE \"n\" > CAST('1' AS BIGINT) AND \"n\" <= CAST('2' AS BIGINT)"
        );
    }

    /// A manifest may put a sequence at any value: advancing it to one
    /// billions of draws away is refused at once, not spun on.
    #[test]
    fn a_sequence_is_advanced_within_a_bound() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE SEQUENCE s START 5; CREATE SEQUENCE d INCREMENT BY -1;")
            .unwrap();
        let seq = |name: &str, last: i64| Sequence {
            schema: "main".into(),
            name: name.into(),
            last_value: Some(last),
        };
        advance_sequence(&conn, &seq("s", 1004)).unwrap();
        let next: i64 = conn
            .query_row("SELECT nextval('s')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(next, 1005);
        let started = Instant::now();
        for (name, last) in [("s", i64::MAX), ("d", i64::MIN)] {
            let e = advance_sequence(&conn, &seq(name, last)).unwrap_err();
            assert_eq!(crate::exit::classify(&e), Some(Code::Unsupported), "{e:#}");
            assert!(
                format!("{e:#}").contains(&format!("sequence main.{name}")),
                "{e:#}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
