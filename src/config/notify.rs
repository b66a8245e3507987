//! The `[notify]` section: a command bkp runs when a timer-driven run fails,
//! when a run succeeds again after a failure, and when `bkp status` finds an
//! RPO breached. See `src/notify.rs`.

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;

use super::Validator;
use crate::notify::{Event, NotifyPlan};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// A program and its arguments (no shell); the event is JSON on its stdin.
    pub command: Vec<String>,
    /// Which events: "failure", "recovery", "stale" (default: all three).
    pub on: Option<Vec<String>>,
    /// Variables the command gets besides the scrubbed environment.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// How long the command may run (default "30s").
    pub timeout: Option<String>,
}

pub(super) fn validate(f: NotifyFile, v: &Validator) -> Result<NotifyPlan> {
    if f.command.first().is_none_or(|p| p.is_empty()) {
        return Err(v.error(
            "notify.command",
            "is empty: name the program and its arguments, e.g. [\"/usr/local/bin/bkp-alert\"]",
        ));
    }
    let on = match f.on {
        None => Event::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                Event::parse(n).ok_or_else(|| {
                    v.error(
                        "notify.on",
                        format!(
                            "{n:?} is not an event: use \"failure\", \"recovery\" or \"stale\""
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let timeout = match f.timeout {
        None => std::time::Duration::from_secs(30),
        Some(t) => crate::units::parse_duration(&t)
            .map_err(|e| v.error("notify.timeout", format!("{e:#}")))?,
    };
    let mut command = f.command;
    let program = PathBuf::from(command.remove(0));
    Ok(NotifyPlan {
        program,
        args: command,
        on,
        pass_env: f.pass_env,
        timeout,
    })
}
