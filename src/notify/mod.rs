//! Notifications: a webhook bkp POSTs to (`webhook.rs`) and a command it
//! runs with the event as JSON on its stdin, when a timer-driven run (`snapshot`, `logs`, `export`, `replicate`,
//! `cleanup`, `verify`, `status`) fails, when one succeeds again after a
//! failure, and when `bkp status` finds an RPO breached (exit 11).
//!
//! The command gets a scrubbed environment (`child.rs`) plus `BKP_EVENT`,
//! `BKP_OPERATION` and `BKP_EXIT_CODE`, and the document `bkp.notify/1`:
//! event, operation, exit code and its name, bkp's own one-line message (never
//! a child's or a store's text), host and time. `bkp notify` sends one by hand
//! (`--test`) or for a unit systemd saw fail (`--failed-unit`). A failed or
//! slow notification is reported and never changes the run's exit code.

pub mod webhook;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A run failed.
    Failure,
    /// A run succeeded after the previous run of the same operation failed.
    Recovery,
    /// `bkp status` found a schedule past its RPO.
    Stale,
    /// `bkp notify --test`: never filtered by `on`.
    Test,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Failure, Event::Recovery, Event::Stale];

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Recovery => "recovery",
            Event::Stale => "stale",
            Event::Test => "test",
        }
    }
}

/// The `[notify]` section, validated.
#[derive(Debug, Clone)]
pub struct NotifyPlan {
    /// A program and its arguments, when configured.
    pub command: Option<(PathBuf, Vec<String>)>,
    pub webhook: Option<webhook::Webhook>,
    pub on: Vec<Event>,
    pub pass_env: Vec<String>,
    pub timeout: Duration,
}

/// The operations whose outcomes are notified: those timers run.
pub const WATCHED: [&str; 7] = [
    "snapshot",
    "logs",
    "export",
    "replicate",
    "cleanup",
    "verify",
    "status",
];

/// Records the outcome of `operation` under `state` and says which event, if
/// any, it is: every failure; a success after a failure; a breached RPO.
pub fn event_for(state: &Path, operation: &str, exit_code: i32) -> Option<Event> {
    let file = state.join(operation);
    let failed_before = std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == "failed");
    let ok = exit_code == crate::exit::SUCCESS;
    // A breached RPO is the status run's finding, not its failure; the next
    // good status is its recovery.
    let stale = operation == "status" && exit_code == crate::exit::STALE;
    let _ = std::fs::create_dir_all(state);
    let _ = std::fs::write(&file, if ok { "ok\n" } else { "failed\n" });
    if stale {
        Some(Event::Stale)
    } else if !ok {
        Some(Event::Failure)
    } else if failed_before {
        Some(Event::Recovery)
    } else {
        None
    }
}

/// Under systemd, records that this run's failure was delivered, so that the
/// `OnFailure=` unit (`bkp notify --failed-unit`) does not send it again: the
/// unit's invocation id (`INVOCATION_ID`), which systemd hands the failure unit
/// as `MONITOR_INVOCATION_ID`.
pub fn mark_reported(state: &Path, operation: &str) {
    if let Ok(id) = std::env::var("INVOCATION_ID") {
        let _ = std::fs::write(state.join(format!("{operation}.reported")), id);
    }
}

/// Whether the run systemd calls `invocation` delivered its own failure.
pub fn was_reported(state: &Path, operation: &str, invocation: &str) -> bool {
    !invocation.is_empty()
        && std::fs::read_to_string(state.join(format!("{operation}.reported")))
            .is_ok_and(|id| id.trim() == invocation)
}

/// The JSON the command reads on stdin. `exit_code` is bkp's, when a run of
/// bkp ended; `code` names it (or says what systemd saw of a unit).
pub fn document(
    event: Event,
    operation: &str,
    exit_code: Option<i32>,
    code: &str,
    message: &str,
    host: &str,
) -> serde_json::Value {
    json!({
        "schema": "bkp.notify/1",
        "event": event.as_str(),
        "operation": operation,
        "exit_code": exit_code,
        "code": code,
        "message": message,
        "host": host,
        "at": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
}

/// Delivers `doc` to the webhook and the command (each is tried, whatever the
/// other did); the error lists what failed.
pub fn send(plan: &NotifyPlan, doc: &serde_json::Value) -> Result<()> {
    let mut failed = Vec::new();
    if let Some(hook) = &plan.webhook {
        if let Err(e) = webhook::send(hook, doc, plan.timeout) {
            failed.push(format!("{e:#}"));
        }
    }
    if let Some((program, args)) = &plan.command {
        if let Err(e) = run_command(plan, program, args, doc) {
            failed.push(format!("{e:#}"));
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => anyhow::bail!("{}", failed.join("; ")),
    }
}

/// Runs the command with `doc` on its stdin, waiting up to the plan's timeout.
fn run_command(
    plan: &NotifyPlan,
    program_path: &Path,
    args: &[String],
    doc: &serde_json::Value,
) -> Result<()> {
    let program = program_path.display().to_string();
    let mut cmd = crate::child::command(program_path, &plan.pass_env);
    cmd.args(args)
        .env("BKP_EVENT", doc["event"].as_str().unwrap_or_default())
        .env(
            "BKP_OPERATION",
            doc["operation"].as_str().unwrap_or_default(),
        );
    if let Some(code) = doc["exit_code"].as_i64() {
        cmd.env("BKP_EXIT_CODE", code.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run the notify command {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Written beside the wait, so that a command that does not read its
        // input still ends within the timeout (it is then killed, and the
        // write ends with a broken pipe).
        let input = serde_json::to_string_pretty(doc)?;
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    match crate::child::wait_timeout(&mut child, plan.timeout)? {
        Some(status) if status.success() => Ok(()),
        Some(status) => anyhow::bail!("the notify command {program} exited with {status}"),
        None => anyhow::bail!(
            "the notify command {program} did not finish within {:?}: stopped it",
            plan.timeout
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_recoveries_and_breaches_are_events_and_successes_are_not() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("notify");
        assert_eq!(event_for(&s, "snapshot", 0), None);
        assert_eq!(event_for(&s, "snapshot", 6), Some(Event::Failure));
        assert_eq!(event_for(&s, "snapshot", 6), Some(Event::Failure));
        assert_eq!(event_for(&s, "logs", 0), None, "per operation");
        assert_eq!(event_for(&s, "snapshot", 0), Some(Event::Recovery));
        assert_eq!(event_for(&s, "snapshot", 0), None);
        assert_eq!(event_for(&s, "status", 11), Some(Event::Stale));
        assert_eq!(event_for(&s, "status", 0), Some(Event::Recovery));
        assert_eq!(event_for(&s, "status", 3), Some(Event::Failure));
        assert_eq!(event_for(&s, "status", 0), Some(Event::Recovery));
    }
}
