//! SIGINT, SIGTERM and SIGHUP end a run cleanly instead of killing it.
//!
//! `main` installs a handler that only records the signal. The byte pipelines
//! check for it at every read and write ([`check`], called by the progress
//! stages every stream passes through) and other long loops call it too, so the
//! run fails at the next step with an error that unwinds like any other: a
//! partial upload is aborted, scratch directories are removed, a stopped replica
//! is started again, no manifest is written. The process then exits with
//! `128 + signal` (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), as shells
//! and restic do. A second signal changes nothing: cleanup is already under way,
//! and SIGKILL remains for an operator who cannot wait.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::exit::{Code, Coded};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    // Only an atomic store: nothing else is async-signal-safe here.
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `record` is an `extern "C"` function that only stores to an
        // atomic, which is async-signal-safe; the sigaction struct is zeroed and
        // then filled completely.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The name of a signal, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The exit code of a run ended by `signal`: `128 + signal`.
pub fn exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Fails once a signal was received, with an error that carries the
/// interrupted exit class.
pub fn check() -> io::Result<()> {
    match received() {
        None => Ok(()),
        Some(s) => Err(error(s)),
    }
}

/// The error of a run ended by `signal`. Not `ErrorKind::Interrupted`:
/// `write_all`, `read_exact` and `io::copy` retry on that kind, forever here.
fn error(signal: i32) -> io::Error {
    io::Error::other(Coded {
        code: Code::Interrupted,
        message: format!(
            "interrupted by {}: the run stopped cleanly and stored no backup",
            name(signal)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The handler itself is proven through the binary (tests/snapshot_restore.rs
    // sends SIGTERM to a run): raising a signal here would interrupt every other
    // test running in this process.
    #[test]
    fn an_interrupt_is_its_own_class_and_never_retried() {
        let e = error(libc::SIGHUP);
        assert_ne!(
            e.kind(),
            io::ErrorKind::Interrupted,
            "write_all would retry it"
        );
        let e = anyhow::Error::new(e);
        assert_eq!(crate::exit::classify(&e), Some(Code::Interrupted));
        assert!(format!("{e:#}").contains("SIGHUP"));
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(exit_code(libc::SIGINT), 130);
    }
}
