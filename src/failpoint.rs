//! Crash points for the leftover tests: `BKP_FAILPOINT=NAME` makes the process SIGKILL itself at the named point,
//! `BKP_FAILPOINT=NAME:N` the N-th time it passes there.
//!
//! A real SIGKILL, not a panic or `abort()`: no destructor, no `Drop` guard and no
//! signal handler runs, exactly as when an operator or the OOM killer ends a run.
//! What the process leaves behind is then what `bkp cleanup` must sweep
//! (`tests/leftovers.rs`). Unset (always, outside the tests), a point costs one
//! atomic load.
//!
//! The points:
//! - `store-write`: a store write has begun and holds bytes. Local store: in the
//!   first write to the partial file under `.bkp-partial/`; S3: once the first
//!   part of a multipart upload is on its way (an upload the server keeps).
//! - `restore-download`: a restore (or a drill) has downloaded, verified and
//!   unpacked one object (or a chunked file) into its staging, with the rest
//!   still to come.
//! - `restore-commit`: a restore's staging is complete, just before it is fsynced
//!   and renamed onto the target.
//! - `restore-replaced`: a `--force` restore swapped its staging with the
//!   existing target directory; the replaced tree, now at the staging path, is
//!   not removed yet.
//! - `private-replica`: a private TigerBeetle replica (a drill's row count, a
//!   point-in-time replay) has started and serves.
//! - `verify-drill`: a drill has restored its backup into its scratch directory
//!   and proved (or failed to prove) it loads, before the scratch is removed.
//! - `cleanup-after-manifest`: cleanup wrote a tombstone and deleted the
//!   manifest, before deleting the backup's objects.
//! - `logs-leased`: `bkp logs` holds the store lease on the chain, before it reads
//!   the chain's head.
//! - `wal-push-stored`: `bkp wal push` stored its file, before it exits 0 (so
//!   PostgreSQL, seeing no success, pushes the same file again).
//! - `manifest-stored`: a backup's manifest is in the store, before its ledger
//!   record is sent or spooled.
//! - `chunk-stored`: a chunked snapshot has uploaded a new chunk (`:N`: its N-th),
//!   the rest of the file still to come.
//!
//! `BKP_PAUSEPOINT=NAME` stops the process (SIGSTOP) at a point instead, every
//! time it passes there (`NAME:N`: the N-th time only), for a test to hold a run
//! at a known step, change the world and send SIGCONT. Every crash point above is
//! a pause point too (`chunk-stored:1`: a snapshot holds its run lock, with most
//! of the file still to read), and these only pause:
//! - `restore-verified`: a restore has verified one object's stored bytes,
//!   before it reads them for use.
//! - `replay-sent`: a point-in-time replay has sent every event to its cluster,
//!   before it counts what the cluster holds.
//! - `lock-wait`: a run found a lock it may wait for held (its run lock, with
//!   `--wait`; a DuckDB database, with `duckdb.lock_wait`), before it tries again.
//! - `logs-looked`: `bkp logs` has read the chain and found something to
//!   capture, before it takes the store lease.
//! - `logs-write`: `bkp logs` is about to write a piece of its segment, and to
//!   renew its lease first if a third of it has passed.
//! - `replicate-read`: `replicate` has streamed a source file through its upload
//!   (still open), before it checks the file is still the version it listed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The variable naming the crash point.
const FAILPOINT: &str = "BKP_FAILPOINT";
/// The variable naming the pause point.
const PAUSEPOINT: &str = "BKP_PAUSEPOINT";

/// The point named in the variable `var`, `NAME` or `NAME:N`, and the pass
/// `N` if given.
fn named(var: &str) -> Option<(String, Option<u64>)> {
    let v = std::env::var(var).ok().filter(|s| !s.is_empty())?;
    let pass = v
        .rsplit_once(':')
        .and_then(|(name, n)| Some((name, n.parse::<u64>().ok().filter(|n| *n > 0)?)));
    Some(match pass {
        Some((name, n)) => (name.to_string(), Some(n)),
        None => (v, None),
    })
}

/// SIGKILLs this process if `BKP_FAILPOINT` is `name` (and this is its N-th pass;
/// the first by default); stops it like [`pause`] if `BKP_PAUSEPOINT` names it.
pub fn hit(name: &str) {
    pause(name);
    static ARMED: OnceLock<Option<(String, Option<u64>)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some((armed, at)) = ARMED.get_or_init(|| named(FAILPOINT)) else {
        return;
    };
    if armed == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == at.unwrap_or(1) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // The signal is delivered before kill(2) returns for the calling thread;
        // never go on should it somehow be late.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Stops this process (SIGSTOP) if `BKP_PAUSEPOINT` is `name` (every pass) or
/// `name:N` (its N-th pass); it goes on when sent SIGCONT.
pub fn pause(name: &str) {
    static ARMED: OnceLock<Option<(String, Option<u64>)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some((armed, at)) = ARMED.get_or_init(|| named(PAUSEPOINT)) else {
        return;
    };
    if armed != name {
        return;
    }
    let pass = PASSES.fetch_add(1, Ordering::SeqCst) + 1;
    if at.is_none_or(|at| at == pass) {
        // To this thread, not the process: the kernel may hand a signal sent to
        // the process to another thread, and this one would run on past the
        // point until that one had stopped them all. A signal to this thread is
        // taken before it returns to the code after the point.
        // SAFETY: pthread_kill(3) on the calling thread, with a plain integer.
        unsafe {
            libc::pthread_kill(libc::pthread_self(), libc::SIGSTOP);
        }
    }
}
