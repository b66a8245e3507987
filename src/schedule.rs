//! Schedules and freshness: which backups are expected how often, and the pure
//! decision whether the newest good one is recent enough.
//!
//! A schedule is one timer of the shipped units (`systemd/`, `examples/crontab`):
//! snapshot every 6 h, logs every 15 min, a full export daily, an incremental
//! export every 6 h, replication hourly, a PostgreSQL dump hourly, a PostgreSQL
//! base backup daily. Each has a recovery point objective
//! (RPO): the newest good backup of the schedule must be younger than it. The
//! decision is a pure function of the newest backup, the rule and `now`
//! ([`decide`]), so it is tested with table cases; `bkp status` feeds it from the
//! manifests in the store.
//!
//! The `[freshness]` config section sets RPOs, intervals and a grace period, and
//! adds or removes watched schedules; the config validates it into a
//! [`FreshnessPlan`] and knows which schedules its sources imply.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::id::BackupId;
use crate::manifest::{Manifest, Scope};

pub use crate::kinds::{schedules, Schedule};

/// What a schedule is, from its kind's descriptor ([`crate::kinds::ALL`]).
impl Schedule {
    /// The subcommand, as manifests record it in `operation`.
    pub fn operation(self) -> &'static str {
        self.spec().operation
    }

    /// The scope its manifests carry, when the schedule is told apart by it.
    pub fn scope(self) -> Option<Scope> {
        self.spec().scope
    }

    /// The command line the timer runs.
    pub fn command(self) -> &'static str {
        self.spec().command
    }

    /// How often the shipped timers run it.
    pub fn default_every(self) -> Duration {
        self.spec().every
    }

    /// The default recovery point objective: one interval.
    pub fn default_rpo(self) -> Duration {
        self.default_every()
    }

    /// Whether `m` is a backup of this schedule. A full export also counts for
    /// the incremental schedule: it holds at least what an incremental taken at
    /// the same moment would (and `bkp export` itself takes a full one when the
    /// chain needs it).
    pub fn matches(self, m: &Manifest) -> bool {
        let spec = self.spec();
        m.kind == self.kind()
            && m.operation == spec.operation
            && (spec.full_counts || spec.scope.is_none_or(|s| s == m.scope))
    }
}

/// What one schedule is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub schedule: Schedule,
    pub rpo: Duration,
    pub every: Duration,
    pub grace: Duration,
}

/// The validated `[freshness]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshnessPlan {
    pub watch: Vec<Schedule>,
    pub ignore: Vec<Schedule>,
    pub rules: Vec<Rule>,
    /// How old the newest archived WAL file may be (`freshness.wal`).
    pub wal: Option<Duration>,
}

impl Rule {
    /// What a schedule is held to when the config says nothing: an RPO of one
    /// interval, and a grace of a tenth of it.
    pub fn default_for(schedule: Schedule) -> Rule {
        Rule {
            schedule,
            rpo: schedule.default_rpo(),
            every: schedule.default_every(),
            grace: schedule.default_rpo() / 10,
        }
    }
}

impl Default for FreshnessPlan {
    /// Every schedule at its defaults, none watched beyond what the sources imply.
    fn default() -> Self {
        FreshnessPlan {
            watch: Vec::new(),
            ignore: Vec::new(),
            rules: schedules().map(Rule::default_for).collect(),
            wal: None,
        }
    }
}

impl FreshnessPlan {
    pub fn rule(&self, s: Schedule) -> Rule {
        self.rules
            .iter()
            .find(|r| r.schedule == s)
            .copied()
            .unwrap_or(Rule::default_for(s))
    }
}

/// The newest good backup of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newest {
    pub id: BackupId,
    pub finished_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The newest good backup is within the RPO (plus grace).
    Ok,
    /// It is older: backups of this schedule have stopped succeeding.
    Breached,
    /// There is none at all.
    Never,
}

impl State {
    pub fn is_alarm(self) -> bool {
        self != State::Ok
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Breached => "breached",
            State::Never => "never",
        }
    }
}

/// The freshness of one schedule at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Rule,
    pub newest: Option<Newest>,
    /// `now - finished_at`, never negative (a clock ahead of ours counts as fresh).
    pub age: Option<Duration>,
    /// When the next run is due: one interval after the newest, or `now` if none.
    pub next_due: OffsetDateTime,
    pub state: State,
}

/// Decides the freshness of `rule`'s schedule given its newest good backup.
pub fn decide(rule: Rule, newest: Option<Newest>, now: OffsetDateTime) -> Verdict {
    let Some(n) = newest else {
        return Verdict {
            rule,
            newest,
            age: None,
            next_due: now,
            state: State::Never,
        };
    };
    let age = (now - n.finished_at).max(time::Duration::ZERO);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    let state = if age > rule.rpo.saturating_add(rule.grace) {
        State::Breached
    } else {
        State::Ok
    };
    Verdict {
        rule,
        newest,
        age: Some(age),
        next_due: n.finished_at + rule.every,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kind;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_760_000_000 + s).unwrap()
    }

    const H: u64 = 3600;

    #[test]
    fn decide_table() {
        let snap = Rule {
            schedule: Schedule::named("snapshot"),
            rpo: Duration::from_secs(6 * H),
            every: Duration::from_secs(6 * H),
            grace: Duration::from_secs(600),
        };
        let logs = Rule {
            schedule: Schedule::named("logs"),
            rpo: Duration::from_secs(900),
            every: Duration::from_secs(300),
            grace: Duration::ZERO,
        };
        let now = t(100 * H as i64);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        // (rule, finished this long ago, expected state, expected age, next due)
        // (rule, finished at, expected state, age, next due)
        type Case = (
            Rule,
            Option<OffsetDateTime>,
            State,
            Option<u64>,
            OffsetDateTime,
        );
        let cases: Vec<Case> = vec![
            (snap, None, State::Never, None, now),
            (
                snap,
                ago(0),
                State::Ok,
                Some(0),
                now + Duration::from_secs(6 * H),
            ),
            (snap, ago(6 * H), State::Ok, Some(6 * H), now),
            // Within the grace period.
            (
                snap,
                ago(6 * H + 600),
                State::Ok,
                Some(6 * H + 600),
                now - Duration::from_secs(600),
            ),
            (
                snap,
                ago(6 * H + 601),
                State::Breached,
                Some(6 * H + 601),
                now - Duration::from_secs(601),
            ),
            (
                snap,
                ago(30 * H),
                State::Breached,
                Some(30 * H),
                now - Duration::from_secs(24 * H),
            ),
            // Finished "in the future" (clock skew): age zero, fresh.
            (
                snap,
                Some(now + Duration::from_secs(60)),
                State::Ok,
                Some(0),
                now + Duration::from_secs(6 * H + 60),
            ),
            (
                logs,
                ago(899),
                State::Ok,
                Some(899),
                now - Duration::from_secs(599),
            ),
            (
                logs,
                ago(900),
                State::Ok,
                Some(900),
                now - Duration::from_secs(600),
            ),
            (
                logs,
                ago(901),
                State::Breached,
                Some(901),
                now - Duration::from_secs(601),
            ),
        ];
        for (i, (rule, finished, state, age, due)) in cases.into_iter().enumerate() {
            let newest = finished.map(|f| Newest {
                id: BackupId::new_v7(f),
                finished_at: f,
            });
            let v = decide(rule, newest, now);
            assert_eq!(v.state, state, "case {i}");
            assert_eq!(v.age.map(|a| a.as_secs()), age, "case {i}");
            assert_eq!(v.next_due, due, "case {i}");
            assert_eq!(v.newest, newest, "case {i}");
            assert_eq!(v.state.is_alarm(), state != State::Ok, "case {i}");
        }
    }

    #[test]
    fn defaults_hold_every_schedule_to_one_interval() {
        let p = FreshnessPlan::default();
        let secs = |s| p.rule(s).rpo.as_secs();
        assert_eq!(secs(Schedule::named("snapshot")), 6 * H);
        assert_eq!(secs(Schedule::named("logs")), 900);
        assert_eq!(secs(Schedule::named("export-full")), 24 * H);
        assert_eq!(secs(Schedule::named("export-incremental")), 6 * H);
        assert_eq!(secs(Schedule::named("replicate")), H);
        assert_eq!(p.rule(Schedule::named("logs")).grace.as_secs(), 90);
        assert_eq!(p.rule(Schedule::named("logs")).every.as_secs(), 900);
        let empty = FreshnessPlan {
            rules: Vec::new(),
            ..FreshnessPlan::default()
        };
        assert_eq!(
            empty.rule(Schedule::named("logs")),
            p.rule(Schedule::named("logs"))
        );
    }

    #[test]
    fn schedules_match_their_manifests() {
        let sample = |kind: Kind, at: OffsetDateTime| Manifest {
            schema: crate::manifest::schema_string(),
            id: BackupId::new_v7(at),
            kind,
            scope: Scope::Full,
            operation: "snapshot".into(),
            status: crate::manifest::Status::Completed,
            started_at: at,
            finished_at: at,
            host: "h".into(),
            bkp_version: "0".into(),
            retention_days: 1,
            compression: crate::stages::compress::Compression::None,
            encryption: None,
            objects: vec![],
            files: vec![],
            parent: None,
            uses: vec![],
            chunks: None,
            source: Default::default(),
            store: None,
        };
        let mut m = sample(Kind::Tigerbeetle, t(0));
        assert!(Schedule::named("snapshot").matches(&m));
        assert!(!Schedule::named("logs").matches(&m));
        m.operation = "logs".into();
        m.scope = Scope::Incremental;
        assert!(Schedule::named("logs").matches(&m));
        let mut e = sample(Kind::Duckdb, t(0));
        e.operation = "export".into();
        assert!(Schedule::named("export-full").matches(&e));
        assert!(
            Schedule::named("export-incremental").matches(&e),
            "a full export is fresh data too"
        );
        e.scope = Scope::Incremental;
        assert!(Schedule::named("export-incremental").matches(&e));
        assert!(!Schedule::named("export-full").matches(&e));
        for s in schedules() {
            assert_eq!(Schedule::parse(s.as_str()), Some(s));
        }
    }
}
