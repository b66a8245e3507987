//! DuckDB for the conformance suite: full and incremental exports of a database with
//! two schemas and awkward values, compared row by row with the live database.

use std::path::{Path, PathBuf};

use crate::Source;

/// A DuckDB database with two schemas and awkward values, exported whole and then
/// incrementally (a table with a watermark and a key, one copied whole).
#[derive(Default)]
pub struct DuckDbExport {
    round: u32,
}

const SCHEMA: &str = r#"
CREATE SCHEMA audit;
CREATE TABLE accounts (id INTEGER PRIMARY KEY, name VARCHAR, balance DECIMAL(18,4), tags VARCHAR[], updated_at TIMESTAMP);
CREATE TABLE events (id BIGINT PRIMARY KEY, account INTEGER, kind VARCHAR, payload BLOB, score DOUBLE, seen TIMESTAMPTZ, updated_at TIMESTAMP);
CREATE TABLE audit.lines (logged TIMESTAMP, line VARCHAR);
INSERT INTO accounts SELECT i, 'acct ' || i, i * 1.25, ['t' || i, NULL], TIMESTAMP '2026-01-01' + INTERVAL (i) MINUTE FROM range(200) t(i);
INSERT INTO accounts VALUES (1000, 'Ünïcødé' || chr(10) || '"quoted" ''x''', NULL, [], '2026-01-01'), (1001, NULL, -0.0001, NULL, '2026-01-01');
INSERT INTO events SELECT i, i % 200, CASE WHEN i % 3 = 0 THEN 'debit' ELSE 'credit' END, ('\x00\xFF' || i::VARCHAR)::BLOB,
  CASE WHEN i = 7 THEN 'NaN'::DOUBLE ELSE i / 3.0 END, to_timestamp(1767225600 + i),
  TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND FROM range(3000) t(i);
INSERT INTO audit.lines VALUES ('2026-01-01', 'one'), ('2026-01-01', 'one'), (NULL, NULL);
"#;

impl DuckDbExport {
    fn db(dir: &Path) -> PathBuf {
        dir.join("hot.duckdb")
    }

    fn write(dir: &Path, sql: &str) {
        let c = duckdb::Connection::open(Self::db(dir)).unwrap();
        c.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{e}\nin:\n{sql}"));
    }
}

impl Source for DuckDbExport {
    fn kind(&self) -> &'static str {
        "duckdb"
    }

    fn populate(&mut self, dir: &Path) {
        Self::write(dir, SCHEMA);
    }

    fn config_section(&self, _dir: &Path) -> String {
        "[duckdb]\ndatabase = \"hot.duckdb\"\n[duckdb.watermarks]\nevents = \"updated_at\"\naccounts = \"updated_at\"\n"
            .into()
    }

    fn back_up(&self) -> Vec<String> {
        ["export", "--kind", "duckdb", "--full"]
            .map(String::from)
            .to_vec()
    }

    fn incremental(&mut self, dir: &Path) -> Option<Vec<String>> {
        self.round += 1;
        let n = self.round;
        let day = format!("TIMESTAMP '2026-02-01' + INTERVAL ({n}) DAY");
        Self::write(
            dir,
            &format!(
                "UPDATE events SET kind = 'reversed {n}', score = -{n}, updated_at = {day} WHERE id % 500 = {n};
                 INSERT INTO events VALUES (9000 + {n}, 1, 'new', NULL, 0.5, '2026-02-01 00:00:00+00', {day});
                 DELETE FROM events WHERE id = 42 + {n};
                 UPDATE accounts SET balance = balance + {n}, updated_at = {day} WHERE id < 5;
                 INSERT INTO audit.lines VALUES ({day}, 'round {n}');"
            ),
        );
        Some(["export", "--kind", "duckdb"].map(String::from).to_vec())
    }

    fn compare(&self, dir: &Path, target: &str) -> Result<(), String> {
        same_duckdb(&Self::db(dir), Path::new(target))
    }
}

/// The same tables with the same columns and the same rows (as multisets).
fn same_duckdb(a: &Path, b: &Path) -> Result<(), String> {
    let c = duckdb::Connection::open_in_memory().unwrap();
    let attach = format!(
        "ATTACH '{}' AS a (READ_ONLY); ATTACH '{}' AS b (READ_ONLY);",
        a.display(),
        b.display()
    );
    c.execute_batch(&attach).map_err(|e| e.to_string())?;
    let strings = |sql: &str| -> Vec<String> {
        let mut st = c.prepare(sql).unwrap();
        let rows = st.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    let columns = |db: &str| {
        strings(&format!(
            "SELECT schema_name || '.' || table_name || '.' || column_name || ' ' || data_type \
             FROM duckdb_columns() WHERE database_name = '{db}' ORDER BY schema_name, table_name, column_index"
        ))
    };
    let (ca, cb) = (columns("a"), columns("b"));
    if ca != cb {
        return Err(format!("columns differ:\n{ca:#?}\n{cb:#?}"));
    }
    let tables = strings(
        "SELECT format('\"{}\".\"{}\"', schema_name, table_name) FROM duckdb_tables() \
         WHERE database_name = 'a' ORDER BY 1",
    );
    for t in &tables {
        let count = |x: &str, y: &str| -> i64 {
            let sql = format!(
                "SELECT count(*) FROM (SELECT * FROM {x}.{t} EXCEPT ALL SELECT * FROM {y}.{t})"
            );
            c.query_row(&sql, [], |r| r.get(0)).unwrap()
        };
        let (only_a, only_b) = (count("a", "b"), count("b", "a"));
        if (only_a, only_b) != (0, 0) {
            return Err(format!(
                "{t}: {only_a} rows only in the source, {only_b} only restored"
            ));
        }
    }
    Ok(())
}
