//! The `[tigerbeetle]` section: the replica data file `bkp snapshot` copies and
//! how it is copied consistently, and the cluster `bkp logs` captures from.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::Validator;
pub use crate::sources::tigerbeetle::{ClusterPlan, SnapshotFormat, SnapshotMode, TigerBeetlePlan};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TigerBeetleFile {
    pub data_file: Option<PathBuf>,
    /// The production cluster, for `bkp logs`.
    pub addresses: Option<String>,
    #[serde(default)]
    pub cluster_id: ClusterId,
    #[serde(default = "default_mode")]
    pub snapshot_mode: String,
    /// "chunked" (content-addressed chunks shared between snapshots) or
    /// "archive" (one self-contained object per snapshot).
    pub snapshot_format: Option<String>,
    pub stop_command: Option<Vec<String>>,
    pub start_command: Option<Vec<String>>,
    pub stop_timeout: Option<String>,
    /// How long `bkp logs` holds the store lease on the cluster's chain.
    pub log_lease: Option<String>,
    pub binary: Option<PathBuf>,
    /// Flags for replicas bkp starts itself (point-in-time restore), as the
    /// production cluster runs them, e.g. ["--development"] or ["--limit-request=1MiB"].
    #[serde(default)]
    pub replica_args: Vec<String>,
    pub retention_days: Option<u16>,
    /// Count the accounts and transfers of each snapshot (stop and reflink modes)
    /// by starting a private replica on the copy after the upload.
    #[serde(default)]
    pub count_rows: bool,
    /// Environment variables the stop and start commands and `tigerbeetle` may
    /// see beyond the harmless ones (see `child.rs`).
    #[serde(default)]
    pub pass_env: Vec<String>,
}

fn default_mode() -> String {
    "offline".into()
}

/// A TigerBeetle cluster id as written: an integer, or a string for ids beyond
/// TOML's 64-bit integers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClusterId {
    Int(u64),
    Text(String),
}

impl ClusterId {
    pub(super) fn value(self, v: &Validator, key: &str) -> Result<u128> {
        match self {
            ClusterId::Int(n) => Ok(u128::from(n)),
            ClusterId::Text(t) => t.trim().parse::<u128>().map_err(|_| {
                v.error(
                    key,
                    format!("{t:?} is not a cluster id (a decimal integer below 2^128)"),
                )
            }),
        }
    }
}

impl Default for ClusterId {
    fn default() -> Self {
        ClusterId::Int(0)
    }
}

pub(super) fn validate(t: TigerBeetleFile, v: &Validator) -> Result<TigerBeetlePlan> {
    let timeout = match &t.stop_timeout {
        Some(s) => v.duration("tigerbeetle.stop_timeout", s)?,
        None => Duration::from_secs(60),
    };
    let log_lease = match &t.log_lease {
        Some(s) => v.duration("tigerbeetle.log_lease", s)?,
        None => Duration::from_secs(600),
    };
    if log_lease < Duration::from_secs(1) {
        return Err(v.error(
            "tigerbeetle.log_lease",
            "must be at least 1s (the default, \"10m\", suits runs every 15 minutes)",
        ));
    }
    let mode = match t.snapshot_mode.as_str() {
        "offline" => SnapshotMode::Offline,
        "reflink" => SnapshotMode::Reflink,
        "stop" => match (t.stop_command, t.start_command) {
            (Some(stop), Some(start)) if !stop.is_empty() && !start.is_empty() => {
                SnapshotMode::Stop {
                    stop,
                    start,
                    timeout,
                }
            }
            _ => return Err(v.error(
                "tigerbeetle.snapshot_mode",
                "\"stop\" needs stop_command and start_command (argument lists, e.g. [\"systemctl\", \"stop\", \"tigerbeetle\"])",
            )),
        },
        other => {
            return Err(v.not_one_of(
                "tigerbeetle.snapshot_mode",
                other,
                &["offline", "stop", "reflink"],
            ))
        }
    };
    if t.data_file.is_none() && t.addresses.is_none() {
        return Err(v.error(
            "[tigerbeetle]",
            "set data_file (for `bkp snapshot`) and/or addresses (the cluster `bkp logs` captures from)",
        ));
    }
    let cluster = match t.addresses {
        Some(a) if a.trim().is_empty() => {
            return Err(v.error(
                "tigerbeetle.addresses",
                "must list the cluster's addresses, e.g. \"10.0.0.1:3000,10.0.0.2:3000\"",
            ))
        }
        Some(addresses) => Some(ClusterPlan {
            cluster_id: t.cluster_id.value(v, "tigerbeetle.cluster_id")?,
            addresses,
        }),
        None => None,
    };
    v.env_names("tigerbeetle.pass_env", &t.pass_env)?;
    let format = match t.snapshot_format.as_deref() {
        None => None,
        Some("chunked") => Some(SnapshotFormat::Chunked),
        Some("archive") => Some(SnapshotFormat::Archive),
        Some(other) => {
            return Err(v.error(
                "tigerbeetle.snapshot_format",
                format!("{other:?} is not one of \"chunked\" (only changed chunks are uploaded), \"archive\" (one self-contained object per snapshot)"),
            ))
        }
    };
    Ok(TigerBeetlePlan {
        format,
        data_file: t.data_file.map(|p| v.path(p)),
        cluster,
        mode,
        binary: t.binary.map(|p| v.path(p)),
        replica_args: t.replica_args,
        count_rows: t.count_rows,
        log_lease,
        retention_days: t.retention_days.unwrap_or(365),
        pass_env: t.pass_env,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};
    use super::*;

    #[test]
    fn modes_and_cluster() {
        let plan = with(
            "[tigerbeetle]\ndata_file = \"data/0_0.tigerbeetle\"\naddresses = \"3000\"\ncluster_id = \"12\"\nsnapshot_mode = \"stop\"\nstop_command = [\"stop\"]\nstart_command = [\"start\"]\nstop_timeout = \"5s\"\n",
        )
        .unwrap();
        let tb = plan.tigerbeetle.unwrap();
        assert_eq!(
            tb.data_file.as_deref(),
            Some(std::path::Path::new("/etc/bkp/data/0_0.tigerbeetle"))
        );
        assert_eq!(tb.cluster.unwrap().cluster_id, 12);
        assert_eq!(
            tb.mode,
            SnapshotMode::Stop {
                stop: vec!["stop".into()],
                start: vec!["start".into()],
                timeout: Duration::from_secs(5),
            }
        );
        assert_eq!(tb.retention_days, 365);

        for (extra, needle) in [
            (
                "data_file = \"/x\"\nsnapshot_mode = \"stop\"\n",
                "stop_command",
            ),
            (
                "data_file = \"/x\"\nsnapshot_mode = \"yolo\"\n",
                "tigerbeetle.snapshot_mode: \"yolo\" is not one of",
            ),
            ("count_rows = true\n", "[tigerbeetle]: set data_file"),
            ("addresses = \" \"\n", "tigerbeetle.addresses"),
            (
                "addresses = \"3000\"\ncluster_id = \"x\"\n",
                "tigerbeetle.cluster_id",
            ),
            (
                "data_file = \"/x\"\nstop_timeout = \"later\"\n",
                "tigerbeetle.stop_timeout",
            ),
        ] {
            fails_naming(&format!("{MINIMAL}[tigerbeetle]\n{extra}"), needle);
        }
    }
}
