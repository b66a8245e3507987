//! The run lock: no two runs of one configuration overlap.
//!
//! An exclusive `flock` on `work_dir/{operation}.lock`. The kernel drops it when the
//! process dies, however it dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::exit::{coded, Code};
use crate::workdir::WorkDir;

pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `operation` (`snapshot`, `logs`…), waiting up to `wait`
    /// for a running run to finish. Different operations may overlap; two runs of
    /// one operation of one config never do.
    pub fn acquire(work_dir: &Path, operation: &str, wait: Duration) -> Result<RunLock> {
        // Private: it holds unencrypted copies of data files while a snapshot runs.
        let work_dir = WorkDir::new(work_dir);
        work_dir.create()?;
        let path = work_dir.lock_file(operation);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("failed to open lock file {}", path.display()))?;
        let deadline = crate::units::deadline(wait);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(RunLock { _file: file, path }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    crate::failpoint::pause("lock-wait");
                    crate::interrupt::check()?;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(coded(
                        Code::Locked,
                        format!(
                            "another `bkp {operation}` run of this configuration holds {}: it will finish on its own; use --wait DURATION to queue behind it",
                            path.display()
                        ),
                    ))
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("failed to lock {}", path.display()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "snapshot", Duration::ZERO).unwrap();
        let err = RunLock::acquire(dir.path(), "snapshot", Duration::from_millis(300))
            .err()
            .unwrap();
        assert_eq!(crate::exit::exit_code(&err), crate::exit::LOCKED);
        // Another operation is not blocked.
        RunLock::acquire(dir.path(), "logs", Duration::ZERO).unwrap();
        drop(first);
        RunLock::acquire(dir.path(), "snapshot", Duration::ZERO).unwrap();
    }
}
