//! Child processes bkp starts (stop and start commands, `tigerbeetle`): a scrubbed
//! environment.
//!
//! bkp's own environment may hold its key or passphrase (`key_env`,
//! `passphrase_env`) and the store's credentials (`AWS_SECRET_ACCESS_KEY`, …). A
//! child sees none of it: only variables that cannot carry a secret (the search
//! path, home, user, locale, time zone, temporary directory, the session bus a
//! `systemctl` needs) and those the config names in `pass_env`.

use std::ffi::OsStr;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// Variables every child gets, when bkp has them.
pub const ALWAYS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
];

/// Whether a child gets the variable `name`; `pass` is the config's `pass_env`.
pub fn passes(name: &str, pass: &[String]) -> bool {
    ALWAYS.contains(&name) || name.starts_with("LC_") || pass.iter().any(|p| p == name)
}

/// A command for `program` whose environment is bkp's, scrubbed: only what
/// [`passes`] lets through.
pub fn command(program: impl AsRef<OsStr>, pass: &[String]) -> Command {
    let mut c = Command::new(program);
    c.env_clear();
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| passes(n, pass)) {
            c.env(name, value);
        }
    }
    c
}

/// Waits for `child` up to `timeout`: its status, or `None` when it ran
/// longer, in which case it has been killed and reaped.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let status = wait_for(child, timeout)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(status)
}

/// Waits for `child` up to `timeout`: its status, or `None` when it still
/// runs, not reaped, so that its pid stays its own for a next signal.
pub fn wait_for(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = crate::units::deadline(timeout);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if std::time::Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_running_child_leaves_it_running_and_unreaped() {
        let mut c = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(wait_for(&mut c, Duration::from_millis(50))
            .unwrap()
            .is_none());
        assert!(c.try_wait().unwrap().is_none(), "still running, not killed");
        assert!(wait_timeout(&mut c, Duration::from_millis(50))
            .unwrap()
            .is_none());
        assert!(
            c.try_wait().unwrap().is_some(),
            "wait_timeout killed and reaped it"
        );
        let mut t = Command::new("true").spawn().unwrap();
        assert!(wait_for(&mut t, Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .success());
    }

    #[test]
    fn secrets_stay_home_and_named_variables_pass() {
        let pass = vec!["TB_SERVICE".to_string()];
        for secret in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "BKP_KEY",
            "BKP_PASSPHRASE",
            "PATHX",
        ] {
            assert!(!passes(secret, &pass), "{secret} must not pass");
        }
        for ok in ["PATH", "HOME", "LC_ALL", "TZ", "TB_SERVICE"] {
            assert!(passes(ok, &pass), "{ok} must pass");
        }
    }

    #[test]
    fn a_child_sees_only_the_scrubbed_environment() {
        let out = command("env", &[])
            .env("BKP_CHILD_TEST_SET_BY_CALLER", "1")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                passes(name, &[]) || name == "BKP_CHILD_TEST_SET_BY_CALLER",
                "child saw {name}"
            );
        }
        assert!(text.contains("BKP_CHILD_TEST_SET_BY_CALLER=1"));
    }
}
