//! The `[freshness]` section: RPOs, intervals and a grace period per schedule,
//! and schedules to watch or ignore beyond those the configured sources imply
//! ([`Plan::watched_schedules`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::{Plan, Validator};
use crate::kinds::Kind;
use crate::schedule::{schedules, FreshnessPlan, Rule, Schedule};

/// The `[freshness]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessFile {
    /// Schedules to watch besides those the configured sources imply.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Schedules never to watch, even when a configured source implies them.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Tolerance past the RPO before it counts as breached; default 10% of each RPO.
    pub grace: Option<String>,
    /// `[freshness.rpo]`: the recovery point objective of each schedule.
    #[serde(default)]
    pub rpo: PerSchedule,
    /// `[freshness.every]`: how often each schedule runs (for the next due time).
    #[serde(default)]
    pub every: PerSchedule,
    /// The newest archived WAL file of each base-backed PostgreSQL server must be
    /// younger than this; unset: not watched.
    pub wal: Option<String>,
}

/// Per-schedule durations, keyed by schedule name (`-` written `_`); every key
/// optional, and a key that names no schedule is an error.
pub type PerSchedule = BTreeMap<String, String>;

/// Refuses a `[freshness.TABLE]` key that names no schedule, and a schedule
/// set under both spellings of its name (`export_full`, `export-full`).
fn known(v: &Validator, table: &str, per: &PerSchedule) -> Result<()> {
    let mut seen = Vec::new();
    for k in per.keys() {
        let Some(s) = Schedule::parse(k) else {
            return Err(v.error(
                &format!("freshness.{table}.{k}"),
                format!(
                    "not a schedule (one of {})",
                    schedules()
                        .map(Schedule::key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if seen.contains(&s) {
            return Err(v.error(
                &format!("freshness.{table}.{k}"),
                format!(
                    "{} is set twice: keep one of {} and {}",
                    s.as_str(),
                    s.key(),
                    s.as_str()
                ),
            ));
        }
        seen.push(s);
    }
    Ok(())
}

/// The value `[freshness.TABLE]` sets for `s`, under either spelling.
fn get(per: &PerSchedule, s: Schedule) -> Option<&String> {
    per.get(&s.key()).or_else(|| per.get(s.as_str()))
}

pub(super) fn validate(f: FreshnessFile, v: &Validator) -> Result<FreshnessPlan> {
    let names = |key: &str, list: &[String]| -> Result<Vec<Schedule>> {
        list.iter()
            .map(|n| {
                Schedule::parse(n).ok_or_else(|| {
                    v.error(
                        key,
                        format!(
                            "{n:?} is not a schedule (one of {})",
                            schedules()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
            })
            .collect()
    };
    let watch = names("freshness.watch", &f.watch)?;
    let ignore = names("freshness.ignore", &f.ignore)?;
    let grace = match &f.grace {
        Some(g) => Some(v.duration("freshness.grace", g)?),
        None => None,
    };
    known(v, "rpo", &f.rpo)?;
    known(v, "every", &f.every)?;
    let mut rules = Vec::new();
    for s in schedules() {
        let key = s.key();
        let default = Rule::default_for(s);
        let per = |table: &str, value: Option<&String>, default: Duration| match value {
            Some(text) => v.positive_duration(&format!("freshness.{table}.{key}"), text),
            None => Ok(default),
        };
        let rpo = per("rpo", get(&f.rpo, s), default.rpo)?;
        let every = per("every", get(&f.every, s), default.every)?;
        rules.push(Rule {
            schedule: s,
            rpo,
            every,
            grace: grace.unwrap_or(rpo / 10),
        });
    }
    let wal = match &f.wal {
        Some(text) => Some(v.positive_duration("freshness.wal", text)?),
        None => None,
    };
    Ok(FreshnessPlan {
        watch,
        ignore,
        rules,
        wal,
    })
}

impl Plan {
    /// The schedules `bkp status` watches: those whose source the config sets
    /// up, plus `freshness.watch`, minus `freshness.ignore`, in
    /// [`schedules`] order.
    ///
    /// A new source section plugs in at [`Plan::has_source`].
    pub fn watched_schedules(&self) -> Vec<Schedule> {
        let f = &self.freshness;
        schedules()
            .filter(|s| (self.implies(*s) || f.watch.contains(s)) && !f.ignore.contains(s))
            .collect()
    }

    /// Whether the sources this config sets up make backups of `s`. A base
    /// backup schedule is watched only when asked for (`freshness.watch`).
    fn implies(&self, s: Schedule) -> bool {
        match s.kind() {
            Kind::Tigerbeetle => self.tigerbeetle.as_ref().is_some_and(|tb| {
                if s.operation() == "logs" {
                    tb.cluster.is_some()
                } else {
                    tb.data_file.is_some()
                }
            }),
            Kind::Postgres => false,
            k => self.has_source(k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};
    use super::*;

    const H: u64 = 3600;

    #[test]
    fn watched_schedules_follow_sources_and_config() {
        let [snapshot, logs, export_full, export_incremental, replicate] = [
            "snapshot",
            "logs",
            "export-full",
            "export-incremental",
            "replicate",
        ]
        .map(Schedule::named);
        let cases: Vec<(&str, Vec<Schedule>)> = vec![
            ("", vec![]),
            ("[tigerbeetle]\ndata_file = \"/d\"\n", vec![snapshot]),
            ("[tigerbeetle]\naddresses = \"3000\"\n", vec![logs]),
            (
                "[tigerbeetle]\ndata_file = \"/d\"\naddresses = \"3000\"\n",
                vec![snapshot, logs],
            ),
            (
                "[duckdb]\ndatabase = \"/h.duckdb\"\n[replicate]\nsource = \"/cold\"\n",
                vec![export_full, export_incremental, replicate],
            ),
            (
                "[tigerbeetle]\ndata_file = \"/d\"\naddresses = \"3000\"\n[freshness]\nignore = [\"logs\"]\nwatch = [\"replicate\", \"export-full\"]\n",
                vec![snapshot, export_full, replicate],
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(with(extra).unwrap().watched_schedules(), want, "{extra}");
        }
    }

    #[test]
    fn rpo_defaults_and_overrides() {
        let p = with("").unwrap();
        assert_eq!(p.freshness, FreshnessPlan::default());

        let p = with("[freshness]\ngrace = \"1m\"\n[freshness.rpo]\nlogs = \"30m\"\n[freshness.every]\nlogs = \"5m\"\n").unwrap();
        let r = p.freshness.rule(Schedule::named("logs"));
        assert_eq!(
            (r.rpo.as_secs(), r.every.as_secs(), r.grace.as_secs()),
            (1800, 300, 60)
        );
        assert_eq!(
            p.freshness.rule(Schedule::named("snapshot")).rpo.as_secs(),
            6 * H
        );
        assert_eq!(
            p.freshness
                .rule(Schedule::named("snapshot"))
                .grace
                .as_secs(),
            60
        );

        // A schedule's name is accepted as output spells it and as a key.
        let p = with("[freshness]\nwatch = [\"export_full\"]\n[freshness.rpo]\n\"export-incremental\" = \"7h\"\n").unwrap();
        assert_eq!(p.freshness.watch, vec![Schedule::named("export-full")]);
        let r = p.freshness.rule(Schedule::named("export-incremental"));
        assert_eq!(r.rpo.as_secs(), 7 * H);
    }

    #[test]
    fn bad_freshness_settings_name_the_key() {
        for (extra, needle) in [
            ("[freshness]\nwatch = [\"hourly\"]\n", "freshness.watch"),
            ("[freshness]\nignore = [\"x\"]\n", "freshness.ignore"),
            ("[freshness]\ngrace = \"soon\"\n", "freshness.grace"),
            (
                "[freshness.rpo]\nlogs = \"0s\"\n",
                "freshness.rpo.logs: must be longer than zero",
            ),
            (
                "[freshness.every]\nexport_full = \"x\"\n",
                "freshness.every.export_full",
            ),
            ("[freshness.rpo]\nweekly = \"7d\"\n", "weekly"),
            (
                "[freshness.rpo]\nexport_full = \"1d\"\n\"export-full\" = \"2d\"\n",
                "export-full is set twice",
            ),
        ] {
            fails_naming(&format!("{MINIMAL}{extra}"), needle);
        }
    }
}
