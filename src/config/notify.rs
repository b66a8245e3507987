//! The `[notify]` section: a webhook bkp POSTs to and a command it runs when a
//! timer-driven run fails, when a run succeeds again after a failure, and when
//! `bkp status` finds an RPO breached. See `src/notify/`.

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;

use super::Validator;
use crate::notify::webhook::{Format, Webhook};
use crate::notify::{Event, NotifyPlan};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// A program and its arguments (no shell); the event is JSON on its stdin.
    pub command: Option<Vec<String>>,
    /// A file holding the webhook's URL (a secret: a Slack URL is its token).
    pub webhook_url_file: Option<PathBuf>,
    /// "json" (bkp.notify/1, the default) or "slack" ({"text": …}).
    pub webhook_format: Option<String>,
    /// Which events: "failure", "recovery", "stale" (default: all three).
    pub on: Option<Vec<String>>,
    /// Variables the command gets besides the scrubbed environment.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// How long the command may run (default "30s").
    pub timeout: Option<String>,
}

pub(super) fn validate(f: NotifyFile, v: &Validator) -> Result<NotifyPlan> {
    if f.command.is_none() && f.webhook_url_file.is_none() {
        return Err(v.error(
            "notify",
            "has nothing to send to: set webhook_url_file (a file holding the URL) or command",
        ));
    }
    if f.command
        .as_ref()
        .is_some_and(|c| c.first().is_none_or(|p| p.is_empty()))
    {
        return Err(v.error(
            "notify.command",
            "is empty: name the program and its arguments, e.g. [\"/usr/local/bin/bkp-alert\"]",
        ));
    }
    let format = match f.webhook_format.as_deref() {
        None => Format::Json,
        Some(s) => Format::parse(s).ok_or_else(|| {
            v.error(
                "notify.webhook_format",
                format!("{s:?} is not a format: use \"json\" or \"slack\""),
            )
        })?,
    };
    if f.webhook_format.is_some() && f.webhook_url_file.is_none() {
        return Err(v.error(
            "notify.webhook_format",
            "is set without webhook_url_file: name the file that holds the URL",
        ));
    }
    let webhook = f.webhook_url_file.map(|p| Webhook {
        url_file: super::encryption::secret_path(p, v),
        format,
    });
    let on = match f.on {
        None => Event::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(v.error(
                "notify.on",
                "is empty, so nothing would ever be sent: list events (\"failure\", \"recovery\", \"stale\") or remove the [notify] section",
            ))
        }
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
        Some(t) => v.positive_duration("notify.timeout", &t)?,
    };
    v.env_names("notify.pass_env", &f.pass_env)?;
    let command = f.command.map(|mut c| (PathBuf::from(c.remove(0)), c));
    Ok(NotifyPlan {
        command,
        webhook,
        on,
        pass_env: f.pass_env,
        timeout,
    })
}
