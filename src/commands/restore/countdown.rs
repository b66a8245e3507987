//! The last chance to keep an existing target: a restore that replaces one
//! (`--force`) from a terminal waits [`SECONDS`] seconds, counting down on
//! stderr, so that Ctrl-C still cancels it with the target untouched (exit 130).
//! `--yes` skips the wait; without a terminal on stdin and stderr (cron, CI,
//! scripts) there is nobody to warn, and `--force` alone suffices.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;

use crate::exit::{coded, Code};

/// How long the countdown lasts.
pub const SECONDS: u64 = 5;

/// Counts down before `what` (a path, a database) is replaced, when it
/// `exists`, `yes` is not given and a person is watching. Fails (interrupted)
/// on SIGINT, SIGTERM or SIGHUP.
pub fn before_replacing_named(what: &str, exists: bool, yes: bool) -> Result<()> {
    if !exists || yes || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(());
    }
    let mut e = std::io::stderr().lock();
    let _ = write!(
        e,
        "bkp: {what} will be replaced (--force). Ctrl-C cancels; --yes skips this wait. Starting in"
    );
    for left in (1..=SECONDS).rev() {
        let _ = write!(e, " {left}");
        let _ = e.flush();
        for _ in 0..10 {
            if let Some(signal) = crate::interrupt::received() {
                let _ = writeln!(e);
                return Err(coded(
                    Code::Interrupted,
                    format!(
                        "restore cancelled by {} before it began: {what} was not touched",
                        crate::interrupt::name(signal),
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = writeln!(e);
    Ok(())
}
