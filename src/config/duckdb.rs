//! The `[duckdb]` section: what `bkp export` reads from the DuckDB hot tier and how.
//!
//! The export's settings, their defaults and their validation, in one place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuckdbFile {
    /// The database file to export.
    pub database: PathBuf,
    /// Tables to export (`name` or `schema.name`); empty means every table.
    #[serde(default)]
    pub include: Vec<String>,
    /// Tables whose rows are never exported (their definition still is).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Per table, the column an incremental export selects changed rows by.
    #[serde(default)]
    pub watermarks: BTreeMap<String, String>,
    /// What an incremental export does with a table without a watermark column:
    /// `"full"` (copy it whole each time) or `"skip"` (only full exports copy it).
    pub without_watermark: Option<String>,
    /// Per table, key columns to use instead of the table's PRIMARY KEY.
    #[serde(default)]
    pub primary_keys: BTreeMap<String, Vec<String>>,
    /// How long to wait for a database that another process holds for writing.
    pub lock_wait: Option<String>,
    /// How far below the previous bound an incremental reads again, for time
    /// watermarks that are coarse or set late (tables with a key only).
    pub watermark_overlap: Option<String>,
    pub retention_days: Option<u16>,
    /// Compress the (already ZSTD-compressed) Parquet files again with [compression].
    #[serde(default)]
    pub recompress: bool,
    /// DuckDB's memory limit for the export, e.g. "2GB" (default: DuckDB's own).
    pub memory_limit: Option<String>,
    /// DuckDB worker threads for the export (default: DuckDB's own).
    pub threads: Option<u32>,
}

/// What an incremental export does with a table that has no watermark column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutWatermark {
    FullCopy,
    Skip,
}

#[derive(Debug, Clone)]
pub struct DuckdbPlan {
    pub database: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub watermarks: BTreeMap<String, String>,
    pub without_watermark: WithoutWatermark,
    pub primary_keys: BTreeMap<String, Vec<String>>,
    pub lock_wait: Duration,
    pub watermark_overlap: Duration,
    pub retention_days: u16,
    pub recompress: bool,
    pub memory_limit: Option<String>,
    pub threads: Option<u32>,
}

impl DuckdbPlan {
    /// Looks a table up in a per-table setting by `schema.name`, or by `name` for
    /// tables in the `main` schema.
    pub fn lookup<'a, T>(map: &'a BTreeMap<String, T>, schema: &str, table: &str) -> Option<&'a T> {
        map.get(&format!("{schema}.{table}"))
            .or_else(|| (schema == "main").then(|| map.get(table)).flatten())
    }

    fn listed(list: &[String], schema: &str, table: &str) -> bool {
        list.iter()
            .any(|n| *n == format!("{schema}.{table}") || (schema == "main" && n == table))
    }

    /// Whether the rows of `schema.table` are exported.
    pub fn exports(&self, schema: &str, table: &str) -> bool {
        (self.include.is_empty() || Self::listed(&self.include, schema, table))
            && !Self::listed(&self.exclude, schema, table)
    }
}

pub(super) fn validate(f: DuckdbFile, v: &Validator) -> Result<DuckdbPlan> {
    if f.database.as_os_str().is_empty() {
        return Err(v.error(
            "duckdb.database",
            "must name the DuckDB database file, e.g. \"/var/lib/app/hot.duckdb\"",
        ));
    }
    let without_watermark = match f.without_watermark.as_deref().unwrap_or("full") {
        "full" => WithoutWatermark::FullCopy,
        "skip" => WithoutWatermark::Skip,
        other => {
            return Err(v.error(
                "duckdb.without_watermark",
                format!(
                    "{other:?} is not one of \"full\" (copy the whole table each time) or \"skip\""
                ),
            ))
        }
    };
    for (t, c) in &f.watermarks {
        if c.trim().is_empty() {
            return Err(v.error(
                &format!("duckdb.watermarks.{t}"),
                "must name a column, e.g. \"updated_at\"",
            ));
        }
    }
    for (t, k) in &f.primary_keys {
        if k.is_empty() || k.iter().any(|c| c.trim().is_empty()) {
            return Err(v.error(
                &format!("duckdb.primary_keys.{t}"),
                "must list one or more column names, e.g. [\"id\"]",
            ));
        }
    }
    let lock_wait = match &f.lock_wait {
        Some(s) => v.duration("duckdb.lock_wait", s)?,
        None => Duration::ZERO,
    };
    let watermark_overlap = match &f.watermark_overlap {
        Some(s) => v.duration("duckdb.watermark_overlap", s)?,
        None => Duration::ZERO,
    };
    if f.threads == Some(0) {
        return Err(v.error("duckdb.threads", "must be at least 1"));
    }
    Ok(DuckdbPlan {
        database: v.path(f.database),
        include: f.include,
        exclude: f.exclude,
        watermarks: f.watermarks,
        without_watermark,
        primary_keys: f.primary_keys,
        lock_wait,
        watermark_overlap,
        retention_days: f.retention_days.unwrap_or(90),
        recompress: f.recompress,
        memory_limit: f.memory_limit,
        threads: f.threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(include: &[&str], exclude: &[&str]) -> DuckdbPlan {
        let f = DuckdbFile {
            database: "db.duckdb".into(),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            watermarks: BTreeMap::new(),
            without_watermark: None,
            primary_keys: BTreeMap::new(),
            lock_wait: None,
            watermark_overlap: None,
            retention_days: None,
            recompress: false,
            memory_limit: None,
            threads: None,
        };
        validate(f, &Validator::new(Path::new("/etc/bkp.toml"))).unwrap()
    }

    #[test]
    fn include_and_exclude_match_plain_and_qualified_names() {
        let all = plan(&[], &["rules", "audit.log"]);
        assert!(all.exports("main", "signals"));
        assert!(!all.exports("main", "rules"));
        assert!(all.exports("audit", "rules"));
        assert!(!all.exports("audit", "log"));
        let some = plan(&["signals", "audit.log"], &[]);
        assert!(some.exports("main", "signals"));
        assert!(!some.exports("other", "signals"));
        assert!(some.exports("audit", "log"));
        assert!(!some.exports("main", "rules"));
        assert_eq!(all.retention_days, 90);
        assert_eq!(all.database, Path::new("/etc/db.duckdb"));
    }

    #[test]
    fn bad_duckdb_settings_name_the_key() {
        use super::super::tests::{fails_naming, MINIMAL};
        for (extra, needle) in [
            ("database = \"\"\n", "duckdb.database"),
            (
                "database = \"d\"\nwithout_watermark = \"drop\"\n",
                "duckdb.without_watermark: \"drop\" is not one of",
            ),
            (
                "database = \"d\"\nwatermarks = { t = \" \" }\n",
                "duckdb.watermarks.t",
            ),
            (
                "database = \"d\"\nprimary_keys = { t = [] }\n",
                "duckdb.primary_keys.t",
            ),
            ("database = \"d\"\nlock_wait = \"x\"\n", "duckdb.lock_wait"),
            (
                "database = \"d\"\nwatermark_overlap = \"soon\"\n",
                "duckdb.watermark_overlap",
            ),
            ("database = \"d\"\nthreads = 0\n", "duckdb.threads"),
        ] {
            fails_naming(&format!("{MINIMAL}[duckdb]\n{extra}"), needle);
        }
    }
}
