//! The `[retention]` section: one policy per group of backups (the groups of
//! the kinds' descriptors: `snapshot`, `logs`, `export_full`,
//! `export_incremental`, `replicate`, `pgdump`, `pgbase`), each a preset with
//! rules on top, and the grace period before `cleanup` removes unnamed objects.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Deserialize;
use time::Duration;

use super::Validator;
use crate::kinds::groups;
#[cfg(test)]
use crate::manifest::{Kind, Scope};
use crate::retention::{default_policy, Policies, Policy, RetentionPlan};

#[derive(Debug, Default, Clone)]
pub struct RetentionFile {
    /// How long an object that no manifest names (a crashed run's upload) is
    /// left alone before `cleanup` removes it.
    pub grace: Option<String>,
    /// `[retention.GROUP]`, one per retention group of the kinds
    /// ([`crate::kinds::groups`]), by group name (a hyphen may stand for an
    /// underscore: `export-full`); any other name is an unknown field.
    pub groups: BTreeMap<&'static str, PolicyFile>,
}

impl<'de> Deserialize<'de> for RetentionFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Tables;
        impl<'de> serde::de::Visitor<'de> for Tables {
            type Value = RetentionFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the [retention] section")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RetentionFile, A::Error> {
                use serde::de::Error;
                let mut out = RetentionFile::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "grace" {
                        out.grace = Some(map.next_value()?);
                        continue;
                    }
                    let name = key.replace('-', "_");
                    let Some((_, g)) = groups().find(|(_, g)| g.name == name) else {
                        return Err(A::Error::unknown_field(&key, FIELDS.as_slice()));
                    };
                    if out.groups.insert(g.name, map.next_value()?).is_some() {
                        return Err(A::Error::custom(format!("{} is set twice", g.name)));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Tables)
    }
}

/// The names `[retention]` takes, for the error about one it does not.
static FIELDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    std::iter::once("grace")
        .chain(groups().map(|(_, g)| g.name))
        .collect()
});

/// One group's rules: a preset, and any rule set on top of it.
#[derive(Debug, Default, Clone, Deserialize)]
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

pub(super) fn validate(f: RetentionFile, v: &Validator) -> Result<RetentionPlan> {
    validate_in(f, v, "retention")
}

/// A copy's `retention` table: the primary's `[retention]` (`primary`) with
/// each group the copy names, and its `grace`, replaced by the copy's.
pub(super) fn validate_copy(
    primary: &RetentionFile,
    own: RetentionFile,
    v: &Validator,
    section: &str,
) -> Result<RetentionPlan> {
    let mut f = primary.clone();
    f.grace = own.grace.or(f.grace);
    f.groups.extend(own.groups);
    validate_in(f, v, section)
}

fn validate_in(mut f: RetentionFile, v: &Validator, section: &str) -> Result<RetentionPlan> {
    let grace = match &f.grace {
        None => Duration::hours(24),
        Some(g) => signed(v, &format!("{section}.grace"), g)?,
    };
    let mut policies = Policies::new(Policy::gfs());
    for (kind, group) in groups() {
        let default = default_policy(kind, group.scope);
        let policy = match f.groups.remove(group.name) {
            None => default,
            Some(f) => policy(f, &format!("{section}.{}", group.name), default, v)?,
        };
        policies = policies.with(kind, group.scope, policy);
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
            ("[retention]\nkeep_last = 3\n", "unknown field `keep_last`"),
            (
                "[retention.logs]\nkeep_lost = 3\n",
                "unknown field `keep_lost`",
            ),
        ] {
            fails_naming(&format!("{MINIMAL}{extra}"), needle);
        }
    }
}
