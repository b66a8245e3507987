//! The `[retention]` section: one policy per group of backups (`snapshot`,
//! `logs`, `export_full`, `export_incremental`, `replicate`, `pgdump`,
//! `pgbase`), each a preset with
//! rules on top, and the grace period before `cleanup` removes unnamed objects.

use anyhow::Result;
use serde::Deserialize;
use time::Duration;

use super::Validator;
use crate::manifest::{Kind, Scope};
use crate::retention::{default_policy, Policies, Policy, RetentionPlan};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// How long an object that no manifest names (a crashed run's upload) is
    /// left alone before `cleanup` removes it.
    pub grace: Option<String>,
    pub snapshot: Option<PolicyFile>,
    pub logs: Option<PolicyFile>,
    pub export_full: Option<PolicyFile>,
    pub export_incremental: Option<PolicyFile>,
    pub replicate: Option<PolicyFile>,
    pub pgdump: Option<PolicyFile>,
    pub pgbase: Option<PolicyFile>,
}

/// One group's rules: a preset, and any rule set on top of it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// "gfs", "count" or "none".
    pub preset: Option<String>,
    pub keep_within: Option<String>,
    pub keep_last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Logs only: keep every segment from the oldest kept snapshot on (default true).
    pub keep_log_window: Option<bool>,
}

/// The groups the section names, with the backups each one holds.
const GROUPS: [(&str, Kind, Scope); 7] = [
    ("snapshot", Kind::Tigerbeetle, Scope::Full),
    ("logs", Kind::Tigerbeetle, Scope::Incremental),
    ("export_full", Kind::Duckdb, Scope::Full),
    ("export_incremental", Kind::Duckdb, Scope::Incremental),
    ("replicate", Kind::Parquet, Scope::Full),
    ("pgdump", Kind::Pgdump, Scope::Full),
    ("pgbase", Kind::Postgres, Scope::Full),
];

pub(super) fn validate(f: RetentionFile, v: &Validator) -> Result<RetentionPlan> {
    let grace = match &f.grace {
        None => Duration::hours(24),
        Some(g) => signed(v, "retention.grace", g)?,
    };
    let mut policies = Policies::new(Policy::gfs());
    let files = [
        f.snapshot,
        f.logs,
        f.export_full,
        f.export_incremental,
        f.replicate,
        f.pgdump,
        f.pgbase,
    ];
    for ((name, kind, scope), file) in GROUPS.into_iter().zip(files) {
        let default = default_policy(kind, scope);
        let policy = match file {
            None => default,
            Some(f) => policy(f, &format!("retention.{name}"), default, v)?,
        };
        policies = policies.with(kind, scope, policy);
    }
    Ok(RetentionPlan { policies, grace })
}

/// A duration as retention counts it.
fn signed(v: &Validator, key: &str, text: &str) -> Result<Duration> {
    let d = v.duration(key, text)?;
    Duration::try_from(d).map_err(|e| v.error(key, e))
}

fn policy(f: PolicyFile, section: &str, default: Policy, v: &Validator) -> Result<Policy> {
    let key = |k: &str| format!("{section}.{k}");
    let mut p = match f.preset.as_deref() {
        None => default,
        Some("gfs") => Policy::gfs(),
        Some("count") => Policy::count_based(),
        Some("none") => Policy::default(),
        Some(other) => return Err(v.not_one_of(&key("preset"), other, &["gfs", "count", "none"])),
    };
    if let Some(w) = &f.keep_within {
        p.keep_within = Some(signed(v, &key("keep_within"), w)?);
    }
    let set = |slot: &mut Option<u32>, value: Option<u32>| {
        if value.is_some() {
            *slot = value;
        }
    };
    set(&mut p.keep_last, f.keep_last);
    set(&mut p.hourly, f.hourly);
    set(&mut p.daily, f.daily);
    set(&mut p.weekly, f.weekly);
    set(&mut p.monthly, f.monthly);
    set(&mut p.yearly, f.yearly);
    if let Some(w) = f.keep_log_window {
        p.keep_log_since_oldest_kept_full = w;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};
    use super::*;

    #[test]
    fn presets_rules_and_defaults() {
        let r = with("").unwrap().retention;
        assert_eq!(r.grace, Duration::hours(24));
        assert_eq!(
            *r.policies.get(Kind::Tigerbeetle, Scope::Full),
            Policy::gfs()
        );
        assert_eq!(
            *r.policies.get(Kind::Parquet, Scope::Full),
            Policy::count_based()
        );
        assert_eq!(
            *r.policies.get(Kind::Pgdump, Scope::Full),
            Policy::count_based(),
            "dumps: 24 hourly, 30 daily, 12 monthly"
        );
        assert_eq!(
            *r.policies.get(Kind::Duckdb, Scope::Incremental),
            Policy::default()
        );

        let r = with(
            "[retention]\ngrace = \"2h\"\n[retention.snapshot]\npreset = \"none\"\nkeep_last = 3\n[retention.logs]\nkeep_within = \"7d\"\nkeep_log_window = false\n",
        )
        .unwrap()
        .retention;
        assert_eq!(r.grace, Duration::hours(2));
        let snap = r.policies.get(Kind::Tigerbeetle, Scope::Full);
        assert_eq!((snap.keep_last, snap.daily), (Some(3), None));
        let logs = r.policies.get(Kind::Tigerbeetle, Scope::Incremental);
        assert_eq!(logs.keep_within, Some(Duration::days(7)));
        assert!(!logs.keep_log_since_oldest_kept_full);
    }

    #[test]
    fn bad_retention_settings_name_the_key() {
        for (extra, needle) in [
            (
                "[retention.snapshot]\npreset = \"weekly\"\n",
                "retention.snapshot.preset: \"weekly\" is not one of \"gfs\", \"count\", \"none\"",
            ),
            ("[retention]\ngrace = \"soon\"\n", "retention.grace"),
            (
                "[retention.export_full]\nkeep_within = \"x\"\n",
                "retention.export_full.keep_within",
            ),
            ("[retention.snapshots]\ndaily = 3\n", "snapshots"),
        ] {
            fails_naming(&format!("{MINIMAL}{extra}"), needle);
        }
    }
}
