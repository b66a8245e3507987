//! `bkp notify`: a notification sent by hand through `[notify]`. `--test`
//! proves that the webhook and the command take an event; `--failed-unit`
//! reports a systemd unit that failed where bkp could not say so itself (a
//! run killed at its runtime cap, a crash, a unit that never started), as
//! `systemd/bkp-failure@.service` does from `OnFailure=`.

use anyhow::Result;

use crate::cli::NotifyArgs;
use crate::exit::{coded, Code};
use crate::notify::{self, Event};
use crate::Ctx;

pub fn run(ctx: &Ctx, args: &NotifyArgs) -> Result<()> {
    let Some(plan) = &ctx.plan.notify else {
        return Err(coded(
            Code::Config,
            "there is no [notify] section in the config: nothing to send to (set webhook_url_file or command)",
        ));
    };
    let host = super::run::hostname();
    let doc = match &args.failed_unit {
        None => notify::document(
            Event::Test,
            "notify",
            None,
            "test",
            "a test notification from bkp notify --test",
            &host,
        ),
        Some(unit) => {
            let failure = UnitFailure::from_env(unit);
            let operation = failure.operation();
            if unit.contains('@') {
                ctx.ui.warn(&format!(
                    "{unit} is an instance of a template unit: this failure goes through the [notify] and work_dir of {}, not the instance's own config",
                    ctx.plan.source.display()
                ));
            }
            let state = crate::workdir::WorkDir::new(&ctx.plan.work_dir).notify_state();
            if notify::was_reported(&state, &operation, &failure.invocation) {
                ctx.ui.info(&format!(
                    "{unit} delivered its own failure notification; not sent again"
                ));
                return Ok(());
            }
            // The next good run of a bkp operation is then a recovery.
            if notify::WATCHED.contains(&operation.as_str()) {
                let _ = notify::event_for(&state, &operation, crate::exit::FAILURE);
            }
            if !plan.on.contains(&Event::Failure) {
                ctx.ui
                    .info("[notify] on does not include \"failure\": nothing sent");
                return Ok(());
            }
            let mut doc = notify::document(
                Event::Failure,
                &operation,
                None,
                &failure.result,
                &failure.message(),
                &host,
            );
            doc["unit"] = unit.clone().into();
            doc
        }
    };
    notify::send(plan, &doc).map_err(|e| {
        coded(
            Code::Transient,
            format!("the notification was not delivered: {e:#}"),
        )
    })?;
    ctx.ui.info(&format!(
        "sent the {} notification",
        doc["event"].as_str().unwrap_or("")
    ));
    Ok(())
}

/// What systemd says of a failed unit, in the variables it gives `OnFailure=`
/// units (systemd 251 and later).
struct UnitFailure {
    unit: String,
    /// `MONITOR_SERVICE_RESULT`: "exit-code", "timeout", "signal", "core-dump"…
    result: String,
    /// `MONITOR_EXIT_CODE`: "exited", "killed", "dumped".
    how: String,
    /// `MONITOR_EXIT_STATUS`: an exit status, or a signal name.
    status: String,
    /// `MONITOR_INVOCATION_ID`: the failed run's invocation.
    invocation: String,
}

impl UnitFailure {
    fn from_env(unit: &str) -> UnitFailure {
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unknown".into())
        };
        UnitFailure {
            unit: unit.to_string(),
            result: var("MONITOR_SERVICE_RESULT"),
            how: var("MONITOR_EXIT_CODE"),
            status: var("MONITOR_EXIT_STATUS"),
            invocation: std::env::var("MONITOR_INVOCATION_ID").unwrap_or_default(),
        }
    }

    /// The bkp operation a unit runs: `bkp-export-full@eu.service` → "export".
    fn operation(&self) -> String {
        let name = self.unit.trim_end_matches(".service");
        let name = name.split('@').next().unwrap_or(name);
        let op = name.strip_prefix("bkp-").unwrap_or(name);
        match op {
            "export-full" | "export-incremental" => "export".into(),
            "verify-drill" => "verify".into(),
            other => other.into(),
        }
    }

    fn message(&self) -> String {
        let why = match self.result.as_str() {
            "timeout" => "it ran past its runtime cap (TimeoutStartSec) and was stopped".into(),
            "signal" | "core-dump" => format!("it was killed by signal {}", self.status),
            "exit-code" => format!("it exited with status {}", self.status),
            "start-limit-hit" => "it failed to start too often".into(),
            other => format!("systemd says: {other} ({} {})", self.how, self.status),
        };
        format!("{} failed: {why}", self.unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(unit: &str, result: &str, how: &str, status: &str) -> UnitFailure {
        UnitFailure {
            unit: unit.into(),
            result: result.into(),
            how: how.into(),
            status: status.into(),
            invocation: String::new(),
        }
    }

    #[test]
    fn units_name_their_operation() {
        for (unit, op) in [
            ("bkp-logs.service", "logs"),
            ("bkp-export-full@eu.service", "export"),
            ("bkp-verify-drill.service", "verify"),
            ("tigerbeetle.service", "tigerbeetle"),
        ] {
            assert_eq!(failure(unit, "", "", "").operation(), op);
        }
    }

    #[test]
    fn the_message_says_what_systemd_saw() {
        assert!(failure("bkp-logs.service", "timeout", "killed", "KILL")
            .message()
            .contains("runtime cap"));
        assert!(failure("bkp-logs.service", "exit-code", "exited", "3")
            .message()
            .contains("exited with status 3"));
    }

    #[test]
    fn only_the_same_invocation_counts_as_reported() {
        let d = tempfile::tempdir().unwrap();
        assert!(!notify::was_reported(d.path(), "logs", "abc"));
        std::fs::write(d.path().join("logs.reported"), "abc").unwrap();
        assert!(notify::was_reported(d.path(), "logs", "abc"));
        assert!(!notify::was_reported(d.path(), "logs", "def"));
        assert!(!notify::was_reported(d.path(), "logs", ""));
    }
}
