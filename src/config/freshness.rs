//! The `[freshness]` section: RPOs, intervals and a grace period per schedule,
//! and schedules to watch or ignore beyond those the configured sources imply
//! ([`Plan::watched_schedules`]).

use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::{Plan, Validator};
use crate::schedule::{FreshnessPlan, Rule, Schedule};

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

/// Per-schedule durations; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerSchedule {
    pub snapshot: Option<String>,
    pub logs: Option<String>,
    pub export_full: Option<String>,
    pub export_incremental: Option<String>,
    pub replicate: Option<String>,
    pub pgdump: Option<String>,
    pub pgbase: Option<String>,
}

impl PerSchedule {
    fn get(&self, s: Schedule) -> Option<&String> {
        match s {
            Schedule::Snapshot => self.snapshot.as_ref(),
            Schedule::Logs => self.logs.as_ref(),
            Schedule::ExportFull => self.export_full.as_ref(),
            Schedule::ExportIncremental => self.export_incremental.as_ref(),
            Schedule::Replicate => self.replicate.as_ref(),
            Schedule::Pgdump => self.pgdump.as_ref(),
            Schedule::Pgbase => self.pgbase.as_ref(),
        }
    }
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
                            Schedule::ALL.map(|s| s.as_str()).join(", ")
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
    let mut rules = Vec::new();
    for s in Schedule::ALL {
        let key = s.as_str().replace('-', "_");
        let default = Rule::default_for(s);
        let per = |table: &str, value: Option<&String>, default: Duration| match value {
            Some(text) => v.positive_duration(&format!("freshness.{table}.{key}"), text),
            None => Ok(default),
        };
        let rpo = per("rpo", f.rpo.get(s), default.rpo)?;
        let every = per("every", f.every.get(s), default.every)?;
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
    /// [`Schedule::ALL`] order.
    ///
    /// A new source section plugs in here with one line.
    pub fn watched_schedules(&self) -> Vec<Schedule> {
        let mut implied = Vec::new();
        if let Some(tb) = &self.tigerbeetle {
            if tb.data_file.is_some() {
                implied.push(Schedule::Snapshot);
            }
            if tb.cluster.is_some() {
                implied.push(Schedule::Logs);
            }
        }
        if self.duckdb.is_some() {
            implied.extend([Schedule::ExportFull, Schedule::ExportIncremental]);
        }
        if self.replicate.is_some() {
            implied.push(Schedule::Replicate);
        }
        if self.postgres.is_some() {
            implied.push(Schedule::Pgdump);
        }
        let f = &self.freshness;
        Schedule::ALL
            .into_iter()
            .filter(|s| (implied.contains(s) || f.watch.contains(s)) && !f.ignore.contains(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};
    use super::*;

    const H: u64 = 3600;

    #[test]
    fn watched_schedules_follow_sources_and_config() {
        use Schedule::*;
        let cases: Vec<(&str, Vec<Schedule>)> = vec![
            ("", vec![]),
            ("[tigerbeetle]\ndata_file = \"/d\"\n", vec![Snapshot]),
            ("[tigerbeetle]\naddresses = \"3000\"\n", vec![Logs]),
            (
                "[tigerbeetle]\ndata_file = \"/d\"\naddresses = \"3000\"\n",
                vec![Snapshot, Logs],
            ),
            (
                "[duckdb]\ndatabase = \"/h.duckdb\"\n[replicate]\nsource = \"/cold\"\n",
                vec![ExportFull, ExportIncremental, Replicate],
            ),
            (
                "[tigerbeetle]\ndata_file = \"/d\"\naddresses = \"3000\"\n[freshness]\nignore = [\"logs\"]\nwatch = [\"replicate\", \"export-full\"]\n",
                vec![Snapshot, ExportFull, Replicate],
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
        let r = p.freshness.rule(Schedule::Logs);
        assert_eq!(
            (r.rpo.as_secs(), r.every.as_secs(), r.grace.as_secs()),
            (1800, 300, 60)
        );
        assert_eq!(p.freshness.rule(Schedule::Snapshot).rpo.as_secs(), 6 * H);
        assert_eq!(p.freshness.rule(Schedule::Snapshot).grace.as_secs(), 60);
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
        ] {
            fails_naming(&format!("{MINIMAL}{extra}"), needle);
        }
    }
}
