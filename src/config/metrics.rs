//! The `[metrics]` section: the directory node_exporter's textfile collector
//! reads run metrics from. Environment override: `BKP_METRICS_DIR`.

use std::path::PathBuf;

use serde::Deserialize;

use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// node_exporter's `--collector.textfile.directory`.
    pub dir: PathBuf,
}

/// The metrics directory: `BKP_METRICS_DIR`, else `metrics.dir`, else none
/// (metrics off).
pub(super) fn dir(f: Option<MetricsFile>, env: Option<PathBuf>, v: &Validator) -> Option<PathBuf> {
    env.or(f.map(|f| v.path(f.dir)))
}
