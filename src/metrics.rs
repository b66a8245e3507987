//! Run metrics for Prometheus, in node_exporter's textfile-collector convention.
//!
//! After every run, success or failure, the run's bookkeeping in `commands`
//! hands a [`RunMetrics`] to [`write`], which writes one file per operation and
//! scope, `bkp_{operation}_{scope}.prom`, into the configured directory. It is
//! written to a temporary file in the same directory and renamed into place, so
//! the collector never reads half a file. A failed run keeps the previous
//! last-success time, read back from the file it replaces: the alert "no success
//! for N hours" keeps working across failures and restarts. [`render`] is the
//! pure part: the file's text from the run and the previous file's text.
//!
//! Metrics (labels `kind`, `operation`, `scope`):
//! - `bkp_last_success_timestamp_seconds`: end of the last successful run
//!   (absent until one succeeded);
//! - `bkp_last_run_timestamp_seconds`: end of the last run;
//! - `bkp_last_run_success`: 1 if the last run succeeded, else 0;
//! - `bkp_last_run_duration_seconds`, `bkp_last_run_bytes` (stored),
//!   `bkp_last_run_objects` (stored objects).
//!
//! `bkp copy` writes one file per copy, `bkp_copy_{name}.prom`, with the
//! same gauges named `bkp_copy_…` and the label `copy` (see [`CopyMetrics`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::manifest::{Kind, Scope};

/// What one run reports.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    pub kind: Kind,
    pub operation: String,
    pub scope: Scope,
    pub success: bool,
    pub finished_at: OffsetDateTime,
    pub duration: Duration,
    /// Bytes stored.
    pub bytes: u64,
    /// Objects stored, when known.
    pub objects: Option<u64>,
}

/// The file a run of `operation` and `scope` writes: `bkp_snapshot_full.prom`.
/// `verify` and `cleanup` work on every kind and write one file per kind:
/// `bkp_verify_tigerbeetle.prom`.
pub fn file_name(operation: &str, kind: Kind, scope: Scope) -> String {
    match operation {
        "verify" | "cleanup" => format!("bkp_{operation}_{}.prom", kind.as_str()),
        _ => format!("bkp_{operation}_{}.prom", scope.as_str()),
    }
}

const SUCCESS_METRIC: &str = "bkp_last_success_timestamp_seconds";

fn seconds(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// The text of the file, given the text of the file it replaces (if any), whose
/// last-success time a failed run keeps.
pub fn render(m: &RunMetrics, previous: Option<&str>) -> String {
    let labels = format!(
        "{{kind=\"{}\",operation=\"{}\",scope=\"{}\"}}",
        m.kind.as_str(),
        m.operation,
        m.scope.as_str()
    );
    let last_success = if m.success {
        Some(seconds(m.finished_at))
    } else {
        previous.and_then(previous_success)
    };
    let mut rows = vec![
        (
            "bkp_last_run_timestamp_seconds",
            "Unix time the last bkp run of this kind ended.",
            format!("{:.3}", seconds(m.finished_at)),
        ),
        (
            "bkp_last_run_success",
            "1 if the last bkp run of this kind succeeded, 0 if it failed.",
            u8::from(m.success).to_string(),
        ),
        (
            "bkp_last_run_duration_seconds",
            "Duration of the last bkp run of this kind.",
            format!("{:.3}", m.duration.as_secs_f64()),
        ),
        (
            "bkp_last_run_bytes",
            "Bytes stored by the last bkp run of this kind.",
            m.bytes.to_string(),
        ),
    ];
    if let Some(n) = m.objects {
        rows.push((
            "bkp_last_run_objects",
            "Objects stored by the last bkp run of this kind.",
            n.to_string(),
        ));
    }
    let success = (
        SUCCESS_METRIC,
        "Unix time the last successful bkp run of this kind ended.",
    );
    gauges(&labels, last_success.map(|s| (success, s)), rows)
}

/// The text of gauges with `labels`: the last-success time first, when
/// there is one, then `rows` (name, help, value).
fn gauges(
    labels: &str,
    success: Option<((&str, &str), f64)>,
    rows: Vec<(&str, &str, String)>,
) -> String {
    let success = success.map(|((name, help), s)| (name, help, format!("{s:.3}")));
    let mut out = String::new();
    for (name, help, value) in success.into_iter().chain(rows) {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}\n"
        );
    }
    out
}

/// The last-success time recorded in an earlier file's text.
fn previous_success(text: &str) -> Option<f64> {
    previous_value(text, SUCCESS_METRIC)
}

/// The value of gauge `metric` in an earlier file's text.
fn previous_value(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .find(|v| v.is_finite())
}

/// The text of `bkp_stored.prom` (`store`: `primary`, or a copy's name):
/// what the store holds after a cleanup, per kind and per storage class,
/// from its manifests (see `manifest::usage`).
pub fn render_stored(store: &str, u: &crate::manifest::usage::Usage) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{store=\"{store}\"{labels}}} {value}");
        }
    };
    family(
        "bkp_stored_bytes",
        "Bytes the store holds per kind, from its manifests (a lower bound where bkp_stored_at_least is 1).",
        u.kinds.iter().map(|(k, b)| (format!(",kind=\"{k}\""), *b)).collect(),
    );
    family(
        "bkp_stored_class_bytes",
        "Bytes the store holds per storage class, from its manifests.",
        u.classes
            .iter()
            .map(|(c, b)| (format!(",class=\"{c}\""), *b))
            .collect(),
    );
    family(
        "bkp_stored_backups",
        "Backups the store holds.",
        vec![(String::new(), u.backups)],
    );
    family(
        "bkp_stored_at_least",
        "1 if the figures are lower bounds (shared chunks, objects of earlier backups).",
        vec![(String::new(), u64::from(u.at_least))],
    );
    let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    family(
        "bkp_stored_timestamp_seconds",
        "Unix time these figures were taken (the end of a bkp cleanup).",
        vec![(String::new(), now)],
    );
    out
}

/// Writes `bkp_stored.prom` (the primary) or `bkp_stored_{copy}.prom` into
/// `dir` atomically; returns the file's path.
pub fn write_stored(
    dir: &Path,
    copy: Option<&str>,
    u: &crate::manifest::usage::Usage,
) -> Result<PathBuf> {
    let name = match copy {
        None => "bkp_stored.prom".to_string(),
        Some(c) => format!("bkp_stored_{c}.prom"),
    };
    put(
        dir,
        &dir.join(name),
        &render_stored(copy.unwrap_or("primary"), u),
    )
}

/// What one `bkp copy` run did for one copy (`[[copies]]` entry `copy`).
#[derive(Debug, Clone)]
pub struct CopyMetrics {
    pub copy: String,
    /// The copy is up to date: nothing failed, nothing was refused.
    pub success: bool,
    pub finished_at: OffsetDateTime,
    pub duration: Duration,
    /// Backups and bytes copied.
    pub backups: u64,
    pub bytes: u64,
    /// Backups and objects not copied, for damage on the primary or a
    /// store that refused them.
    pub not_copied: u64,
}

const COPY_SUCCESS_METRIC: &str = "bkp_copy_last_success_timestamp_seconds";

/// The text of a copy's file (`bkp_copy_{name}.prom`), given the text of
/// the file it replaces, whose last-success time a failed run keeps.
pub fn render_copy(m: &CopyMetrics, previous: Option<&str>) -> String {
    let labels = format!("{{copy=\"{}\"}}", m.copy);
    let last_success = if m.success {
        Some(seconds(m.finished_at))
    } else {
        previous.and_then(|p| previous_value(p, COPY_SUCCESS_METRIC))
    };
    let success = (
        COPY_SUCCESS_METRIC,
        "Unix time the last bkp copy run that left this copy up to date ended.",
    );
    let rows = vec![
        (
            "bkp_copy_last_run_timestamp_seconds",
            "Unix time the last bkp copy run into this copy ended.",
            format!("{:.3}", seconds(m.finished_at)),
        ),
        (
            "bkp_copy_last_run_success",
            "1 if the last bkp copy run left this copy up to date, 0 if not.",
            u8::from(m.success).to_string(),
        ),
        (
            "bkp_copy_last_run_duration_seconds",
            "Duration of the last bkp copy run into this copy.",
            format!("{:.3}", m.duration.as_secs_f64()),
        ),
        (
            "bkp_copy_last_run_bytes",
            "Bytes the last bkp copy run copied into this copy.",
            m.bytes.to_string(),
        ),
        (
            "bkp_copy_last_run_backups",
            "Backups the last bkp copy run copied into this copy.",
            m.backups.to_string(),
        ),
        (
            "bkp_copy_not_copied",
            "Backups and objects the last bkp copy run could not copy into this copy.",
            m.not_copied.to_string(),
        ),
    ];
    gauges(&labels, last_success.map(|s| (success, s)), rows)
}

/// Writes a copy's metrics into `dir` atomically; returns the file's path.
pub fn write_copy(dir: &Path, m: &CopyMetrics) -> Result<PathBuf> {
    let path = dir.join(format!("bkp_copy_{}.prom", m.copy));
    let previous = std::fs::read_to_string(&path).ok();
    put(dir, &path, &render_copy(m, previous.as_deref()))
}

/// Writes the metrics of one run into `dir` atomically; returns the file's path.
pub fn write(dir: &Path, m: &RunMetrics) -> Result<PathBuf> {
    let path = dir.join(file_name(&m.operation, m.kind, m.scope));
    let previous = std::fs::read_to_string(&path).ok();
    put(dir, &path, &render(m, previous.as_deref()))
}

/// Writes `text` to `path` in `dir` atomically.
fn put(dir: &Path, path: &Path, text: &str) -> Result<PathBuf> {
    // A name the collector ignores (it reads only *.prom), in the same directory
    // so that the rename is atomic.
    let mut tmp = tempfile::Builder::new()
        .prefix(".bkp_metrics")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("failed to write metrics into {}", dir.display()))?;
    // Readable by the collector, which usually runs as another user. On the
    // open file, not by name: whoever else may write the directory could put
    // a link to another file under the name in between.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("failed to set permissions in {}", dir.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("failed to rename metrics into {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(success: bool, at: i64) -> RunMetrics {
        RunMetrics {
            kind: Kind::Tigerbeetle,
            operation: "snapshot".into(),
            scope: Scope::Full,
            success,
            finished_at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
            duration: Duration::from_millis(1500),
            bytes: if success { 1234 } else { 0 },
            objects: Some(u64::from(success)),
        }
    }

    #[test]
    fn a_failure_keeps_the_previous_success_time() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(dir.path(), &run(true, 1_700_000_000)).unwrap();
        assert_eq!(ok.file_name().unwrap(), "bkp_snapshot_full.prom");
        let text = std::fs::read_to_string(&ok).unwrap();
        assert_eq!(previous_success(&text), Some(1_700_000_000.0));
        assert!(text.contains(
            "bkp_last_run_success{kind=\"tigerbeetle\",operation=\"snapshot\",scope=\"full\"} 1\n"
        ));
        assert!(text.contains(
            "bkp_last_run_bytes{kind=\"tigerbeetle\",operation=\"snapshot\",scope=\"full\"} 1234\n"
        ));

        write(dir.path(), &run(false, 1_700_003_600)).unwrap();
        let text = std::fs::read_to_string(&ok).unwrap();
        assert_eq!(previous_success(&text), Some(1_700_000_000.0));
        assert!(text.contains(
            "bkp_last_run_success{kind=\"tigerbeetle\",operation=\"snapshot\",scope=\"full\"} 0\n"
        ));
        assert!(text.contains("bkp_last_run_timestamp_seconds{kind=\"tigerbeetle\",operation=\"snapshot\",scope=\"full\"} 1700003600.000\n"));
        // Only the .prom file remains: no temporary files for the collector to trip on.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("bkp_snapshot_full.prom")]
        );
    }

    #[test]
    fn a_first_run_that_fails_has_no_success_time() {
        let text = render(&run(false, 1_700_000_000), None);
        assert_eq!(previous_success(&text), None);
        assert!(!text.contains(SUCCESS_METRIC));
        // Nor after a previous file without one.
        let again = render(&run(false, 1_700_000_600), Some(&text));
        assert!(!again.contains(SUCCESS_METRIC));
    }

    #[test]
    fn render_keeps_the_previous_success_only_on_failure() {
        let ok = render(&run(true, 1_700_000_000), None);
        let failed = render(&run(false, 1_700_003_600), Some(&ok));
        assert_eq!(previous_success(&failed), Some(1_700_000_000.0));
        let ok_again = render(&run(true, 1_700_007_200), Some(&failed));
        assert_eq!(previous_success(&ok_again), Some(1_700_007_200.0));
        assert!(ok.contains(
            "bkp_last_run_objects{kind=\"tigerbeetle\",operation=\"snapshot\",scope=\"full\"} 1\n"
        ));
        let unknown = RunMetrics {
            objects: None,
            ..run(true, 1_700_000_000)
        };
        assert!(!render(&unknown, None).contains("bkp_last_run_objects"));
    }

    #[test]
    fn a_copy_keeps_its_last_success_across_a_failed_run() {
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let m = |success: bool, t: i64| CopyMetrics {
            copy: "dr".into(),
            success,
            finished_at: at(t),
            duration: Duration::from_secs(3),
            backups: 2,
            bytes: 10,
            not_copied: u64::from(!success),
        };
        let ok = render_copy(&m(true, 1_000), None);
        assert!(ok.contains("bkp_copy_last_success_timestamp_seconds{copy=\"dr\"} 1000.000"));
        let failed = render_copy(&m(false, 2_000), Some(&ok));
        assert!(failed.contains("bkp_copy_last_success_timestamp_seconds{copy=\"dr\"} 1000.000"));
        assert!(failed.contains("bkp_copy_last_run_success{copy=\"dr\"} 0"));
        assert!(failed.contains("bkp_copy_not_copied{copy=\"dr\"} 1"));
        assert!(!render_copy(&m(false, 2_000), None).contains("last_success"));
    }

    #[test]
    fn verify_and_cleanup_write_one_file_per_kind() {
        assert_eq!(
            file_name("snapshot", Kind::Tigerbeetle, Scope::Full),
            "bkp_snapshot_full.prom"
        );
        assert_eq!(
            file_name("logs", Kind::Tigerbeetle, Scope::Incremental),
            "bkp_logs_incremental.prom"
        );
        assert_eq!(
            file_name("cleanup", Kind::Duckdb, Scope::Full),
            "bkp_cleanup_duckdb.prom"
        );
        assert_eq!(
            file_name("verify", Kind::Parquet, Scope::Full),
            "bkp_verify_parquet.prom"
        );
    }
}
