//! `verify --junit FILE`: the run's checks as test cases ([`crate::junit`]),
//! so a CI system shows what a drill found: suites `backups` (one case per
//! backup verified), `objects` (one per object read or looked up), `ledger`
//! (the audit), `drills` (one per restore drilled), `problems` (what concerns
//! no single backup) and `not_checked` (what could not be looked at, as
//! errors: CI must not show a check that never ran as passed or skipped).
//! Failures carry bkp's message.

use time::OffsetDateTime;

use super::Findings;
use crate::junit::{render, short, Case, Suite, Verdict};
use crate::units::count;

/// What a backup's check read: `3 objects, 1 byte read`.
fn read(objects: usize, bytes: u64) -> String {
    format!(
        "{}, {} read",
        count(objects as u64, "object"),
        count(bytes, "byte")
    )
}

/// The test report of a run whose checks ran.
pub fn report(f: &Findings, finished_at: OffsetDateTime, ledger_configured: bool) -> String {
    let mut suites = Vec::new();
    let failed_if = |problems: &[String]| {
        if problems.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Failed(problems.join("\n"))
        }
    };
    suites.push(Suite {
        name: "backups".into(),
        cases: f
            .checks
            .iter()
            .map(|c| Case {
                classname: format!("bkp.verify.backup.{}", c.kind.as_str()),
                name: format!(
                    "{} {} {} {}",
                    c.kind.as_str(),
                    c.operation,
                    c.scope.as_str(),
                    c.id
                ),
                verdict: failed_if(&c.problems),
                out: Some(read(c.objects, c.bytes_read)),
            })
            .collect(),
    });
    suites.push(Suite {
        name: "objects".into(),
        cases: f
            .checks
            .iter()
            .flat_map(|c| {
                c.results.iter().map(move |o| Case {
                    classname: format!("bkp.verify.object.{}.{}", c.kind.as_str(), c.id),
                    name: if o.shared {
                        format!("shared {}", o.key)
                    } else {
                        o.key.clone()
                    },
                    verdict: o.problem.clone().map_or(Verdict::Passed, Verdict::Failed),
                    out: None,
                })
            })
            .collect(),
    });
    let ledger = if !ledger_configured {
        Some(Verdict::Skipped("no [ledger] is configured".into()))
    } else if f.audit.checked || !f.audit.problems.is_empty() {
        Some(failed_if(&f.audit.problems))
    } else {
        None // not_checked says why
    };
    suites.push(Suite {
        name: "ledger".into(),
        cases: ledger
            .map(|verdict| Case {
                classname: "bkp.verify.ledger".into(),
                name: "ledger audit".into(),
                verdict,
                out: None,
            })
            .into_iter()
            .collect(),
    });
    suites.push(Suite {
        name: "drills".into(),
        cases: f
            .drills
            .iter()
            .map(|d| Case {
                classname: format!("bkp.verify.drill.{}", d.kind.as_str()),
                name: format!("restore {} {}", d.kind.as_str(), d.id),
                verdict: failed_if(&d.problems),
                out: Some(
                    d.facts
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            })
            .collect(),
    });
    suites.push(Suite {
        name: "problems".into(),
        cases: f
            .general
            .iter()
            .map(|g| Case {
                classname: "bkp.verify".into(),
                name: short(g),
                verdict: Verdict::Failed(g.clone()),
                out: None,
            })
            .collect(),
    });
    suites.push(Suite {
        name: "not_checked".into(),
        cases: f
            .trouble
            .iter()
            .map(|e| Case {
                classname: format!(
                    "bkp.verify.not_checked.{}",
                    crate::exit::name(crate::exit::exit_code(e))
                ),
                name: short(&e.to_string()),
                verdict: Verdict::Error(e.to_string()),
                out: None,
            })
            .collect(),
    });
    let seconds = (finished_at - f.started_at).as_seconds_f64();
    render("bkp verify", f.started_at, seconds, &suites)
}

/// The test report of a run that ended before its checks: one error case.
pub fn aborted(e: &anyhow::Error, started_at: OffsetDateTime) -> String {
    let seconds = (OffsetDateTime::now_utc() - started_at).as_seconds_f64();
    let case = Case {
        classname: "bkp.verify".into(),
        name: "verify".into(),
        verdict: Verdict::Error(format!("{e:#}")),
        out: None,
    };
    render(
        "bkp verify",
        started_at,
        seconds,
        &[Suite {
            name: "verify".into(),
            cases: vec![case],
        }],
    )
}
