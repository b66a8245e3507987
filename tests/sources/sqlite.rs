//! SQLite for the conformance suite: a database in WAL mode with awkward values
//! (a quoted table name, blobs, NULLs, text in several scripts, a view and an
//! index), copied while a second connection holds it open, and compared row by
//! row (every value through SQLite's own `quote`) and schema by schema.

use std::path::{Path, PathBuf};

use crate::Source;

#[derive(Default)]
pub struct SqliteDb {
    /// A connection kept open across the backups, as an application's would be.
    open: Option<rusqlite::Connection>,
}

const SCHEMA: &str = r#"
PRAGMA journal_mode = WAL;
CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT, balance REAL, note BLOB);
CREATE TABLE "odd ""name""" (k TEXT, v);
CREATE INDEX accounts_name ON accounts(name);
CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 100;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
  INSERT INTO accounts (name, balance, note) SELECT 'acct ' || i, i * 1.25, randomblob(i % 64) FROM n;
INSERT INTO accounts (name, balance, note) VALUES ('Ünïcødé ' || char(10) || '"quoted" ''x''', NULL, x'00FF'), (NULL, -0.0001, NULL);
INSERT INTO "odd ""name""" VALUES ('a', 1), ('b', 'two'), ('c', NULL), ('d', x'DEADBEEF');
"#;

impl SqliteDb {
    fn db(dir: &Path) -> PathBuf {
        dir.join("app.db")
    }
}

/// Every table's and view's definition, then every row of every table with
/// each value quoted by SQLite, in rowid order.
fn contents(path: &Path) -> Result<Vec<String>, String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let strings = |sql: &str| -> Result<Vec<String>, String> {
        let mut st = c.prepare(sql).map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    let mut out = strings("SELECT type || ' ' || name || ': ' || sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")?;
    let tables = strings("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
    for t in tables {
        let q = format!("\"{}\"", t.replace('"', "\"\""));
        let columns = strings(&format!(
            "SELECT name FROM pragma_table_info('{}')",
            t.replace('\'', "''")
        ))?;
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{}\")", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        out.push(format!("table {t}"));
        out.extend(strings(&format!("SELECT {row} FROM {q} ORDER BY rowid"))?);
    }
    Ok(out)
}

impl Source for SqliteDb {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn populate(&mut self, dir: &Path) {
        let c = rusqlite::Connection::open(Self::db(dir)).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        // The application's connection stays open, with a write not yet
        // checkpointed into the database file (it is in app.db-wal).
        c.execute("UPDATE accounts SET balance = 7 WHERE id = 1", [])
            .unwrap();
        self.open = Some(c);
    }

    fn config_section(&self, _dir: &Path) -> String {
        "[sqlite]\ndatabase = \"app.db\"\n".into()
    }

    fn back_up(&self) -> Vec<String> {
        ["snapshot", "--kind", "sqlite"].map(String::from).to_vec()
    }

    fn compare(&self, dir: &Path, target: &str) -> Result<(), String> {
        let (a, b) = (contents(&Self::db(dir))?, contents(Path::new(target))?);
        if a == b {
            return Ok(());
        }
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        Err(format!(
            "the restored database differs from the source at line {first} ({} lines against {}): {:?} / {:?}",
            a.len(),
            b.len(),
            a.get(first),
            b.get(first)
        ))
    }
}
