//! The manifest of a DuckDB export, read as what it is: per-table records (mode,
//! rows, watermark bounds, files) in `source.tables`, the schema file, and the key
//! layout of its objects.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{Kind, Manifest, Scope};
use crate::id::BackupId;
use crate::store::Store;

pub const OPERATION: &str = "export";
/// The name of the schema file in every export.
pub const SCHEMA_FILE: &str = "schema.sql";
/// What the manifest says about deleted rows.
pub const DELETES_NOTE: &str = "captured: an incremental of a table with a primary key records the current key set, and a restore removes rows missing from it; a table without one is applied incrementally only while rows are only added, and copied whole otherwise";

/// How one table was exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableMode {
    /// Every row (a full export).
    Full,
    /// The rows changed since the previous export, and the current key set.
    Incremental,
    /// Every row, replacing the table on restore (no watermark, or no previous bound).
    FullCopy,
    /// Not copied by this incremental (no watermark and `without_watermark = "skip"`).
    Skipped,
    /// Not copied at all (config include/exclude): restored empty.
    Excluded,
}

impl TableMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TableMode::Full => "full",
            TableMode::Incremental => "incremental",
            TableMode::FullCopy => "full-copy",
            TableMode::Skipped => "skipped",
            TableMode::Excluded => "excluded",
        }
    }
}

/// The watermark of a table in one export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub column: String,
    /// The column's SQL type, used to compare bounds.
    #[serde(rename = "type")]
    pub ty: String,
    /// Rows with a watermark above this were exported (None: from the start).
    pub from: Option<String>,
    /// … up to and including this (None: the table had no watermark value).
    pub to: Option<String>,
    /// Rows this many milliseconds below `from` were read again
    /// (`duckdb.watermark_overlap`), and applied by primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_ms: Option<u64>,
}

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFile {
    /// `data` (rows) or `keys` (the primary keys of every current row).
    pub role: String,
    /// Name in the manifest's `files`, e.g. `main.signals/data.parquet`.
    pub name: String,
    pub object: String,
    pub rows: u64,
    pub size: u64,
    pub sha256: String,
}

/// An order-independent fingerprint of a table's rows (see
/// `sources::duck::fingerprint`), taken in the export's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How it was computed: `row-hash-sum/1`, the sum of DuckDB's `hash()` of
    /// every row's stored columns.
    pub method: String,
    /// The DuckDB version that computed it: only the same version can compare.
    pub duckdb: String,
    pub value: String,
}

/// The fingerprint method this build computes.
pub const FINGERPRINT_METHOD: &str = "row-hash-sum/1";

/// What the manifest records for one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    /// The table's place in creation order (tables referenced by foreign keys first).
    #[serde(default)]
    pub position: usize,
    pub schema: String,
    pub table: String,
    pub mode: TableMode,
    /// Rows in this export's data file.
    pub rows: u64,
    /// Rows the table holds once this export is restored (None: excluded).
    pub rows_total: Option<u64>,
    pub primary_key: Vec<String>,
    pub watermark: Option<Watermark>,
    pub files: Vec<TableFile>,
    /// The content of the table once this export is restored (None: excluded,
    /// or an export older than fingerprints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Why the table was exported the way it was, when not the obvious way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The per-table records of an export manifest, by `schema.table`.
pub fn table_records(m: &Manifest) -> Result<BTreeMap<String, TableRecord>> {
    let v = m.source.get("tables").cloned().unwrap_or(json!({}));
    serde_json::from_value(v)
        .with_context(|| format!("manifest {} has unreadable table records", m.key()))
}

/// Whether `name` can be the name of a file of an export: a relative path whose
/// parts are plain names (`schema.sql`, `main.signals/data.parquet`), never empty,
/// `.` or `..`. Names come from manifests, which are untrusted: a restore refuses
/// an export with any other name, whatever it would do with it.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Every export manifest, oldest first.
pub fn export_manifests(store: &dyn Store, trust: &super::Trust) -> Result<Vec<Manifest>> {
    let (all, _) = super::list(store, trust, Some(Kind::Duckdb))?;
    Ok(all
        .into_iter()
        .filter(|m| m.operation == OPERATION)
        .collect())
}

/// Object keys: `duckdb/{scope}/{yyyy}/{mm}/{dd}/{id}/{file}{suffix}`.
pub fn object_key(
    scope: Scope,
    id: BackupId,
    at: OffsetDateTime,
    file: &str,
    suffix: &str,
) -> String {
    format!(
        "duckdb/{}/{:04}/{:02}/{:02}/{id}/{file}{suffix}",
        scope.as_str(),
        at.year(),
        at.month() as u8,
        at.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_relative_paths_of_plain_parts() {
        for good in [
            SCHEMA_FILE,
            "main.signals/data.parquet",
            "x.y_z-1/keys.parquet",
        ] {
            assert!(is_file_name(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "..",
            "a\\..\\b",
            "a\0b",
            "a\nb",
        ] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
    }
}
