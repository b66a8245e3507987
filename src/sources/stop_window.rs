//! The stop window of `snapshot_mode = "stop"`: from the stop command to the
//! end of the start command, the production replica is down.
//!
//! A run killed inside it (SIGKILL, the OOM killer, a reboot of the host's bkp
//! only) cannot run the start command, and nothing else would: the replica
//! would stay down until someone noticed. So before the stop command runs, the
//! snapshot puts a marker in `work_dir` ([`MARKER`]), kept `flock`ed by the run
//! for as long as it lives, and removes it only once the start command
//! succeeded. Every later run of bkp with the same `work_dir` calls
//! [`recover`]: a marker nobody holds means its run is gone with the replica
//! stopped, so it runs the start command of the config and says so loudly.
//! While the start command fails (or the config has none), the marker stays, and
//! every run warns and `bkp status` fails (exit 7) naming it.
//!
//! The marker goes into place by rename, already locked, and a recoverer checks
//! after locking that the name still leads to the file it locked: it never
//! takes a live run's marker, nor one removed while it waited.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::workdir::{sync_dir, WorkDir};

/// The marker's name in `work_dir`.
pub const MARKER: &str = "replica-stopped.json";

/// What the marker records: who stopped which replica, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stopped {
    /// The data file of the replica that was stopped.
    pub data_file: PathBuf,
    /// The process of the run that stopped it.
    pub pid: u32,
    /// When the stop command was started (RFC 3339, UTC).
    pub since: String,
}

impl Stopped {
    /// `the run (pid 123) that stopped the replica of /var/lib/tb/0_0.tigerbeetle at 2026-…`
    pub fn describe(&self) -> String {
        format!(
            "the bkp run (pid {}) that stopped the replica of {} at {}",
            self.pid,
            self.data_file.display(),
            self.since
        )
    }

    /// How long ago the replica was stopped, when the marker's time is readable.
    pub fn age(&self, now: OffsetDateTime) -> Option<Duration> {
        let since = OffsetDateTime::parse(&self.since, &Rfc3339).ok()?;
        (now - since).try_into().ok()
    }
}

fn marker_path(work: &WorkDir) -> PathBuf {
    work.root().join(MARKER)
}

/// A live stop window: the marker, locked by this run.
#[derive(Debug)]
pub struct Window {
    path: PathBuf,
    file: File,
}

/// Puts the marker in place, locked, before the stop command runs.
pub fn enter(work: &WorkDir, data_file: &Path) -> Result<Window> {
    work.create()?;
    let path = marker_path(work);
    let next = work.root().join(format!("{MARKER}.new"));
    let record = Stopped {
        data_file: data_file.to_path_buf(),
        pid: std::process::id(),
        since: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
    };
    let what = || format!("failed to write the stop-window marker {}", next.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&next)
        .with_context(what)?;
    file.try_lock().with_context(what)?;
    file.write_all(&serde_json::to_vec_pretty(&record)?)
        .with_context(what)?;
    file.sync_all().with_context(what)?;
    fs::rename(&next, &path).with_context(what)?;
    sync_dir(work.root());
    Ok(Window { path, file })
}

impl Window {
    /// The start command succeeded: the marker goes (while still locked).
    pub fn leave(self) -> Result<()> {
        fs::remove_file(&self.path).with_context(|| {
            format!(
                "the replica is running again, but the stop-window marker {} could not be removed; remove it by hand",
                self.path.display()
            )
        })?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")));
        drop(self.file);
        Ok(())
    }

    /// The start command failed: the marker stays (unlocked once this run
    /// ends), so that the next run tries the start command again.
    pub fn keep(self) {
        drop(self.file);
    }
}

/// What [`recover`] found.
#[derive(Debug)]
pub enum Recovery {
    /// No marker, or one a live run holds.
    Nothing,
    /// A dead run's marker; the start command ran and succeeded.
    Started(Stopped),
    /// A dead run's marker, and the replica may still be down: why.
    Down(Stopped, String),
}

/// A marker whose run is gone, held locked by the caller.
struct Orphan {
    file: File,
    record: Stopped,
}

/// Finds a marker no live run holds; `Ok(None)` when there is none.
fn orphan(work: &WorkDir) -> Result<Option<Orphan>> {
    let path = marker_path(work);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        // No marker; or a work_dir of another user, whose runs see to it.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read the stop-window marker {}",
                path.display()
            )))
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot lock the stop-window marker {}",
                path.display()
            )))
        }
    }
    // The name must still lead to the file locked: a run that ended cleanly
    // removes its marker while holding the lock.
    let (held, named) = (file.metadata()?, fs::metadata(&path));
    match named {
        Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => {}
        _ => return Ok(None),
    }
    let mut text = String::new();
    let _ = (&mut file).take(64 * 1024).read_to_string(&mut text);
    // An unreadable marker still means a replica may be down.
    let record = serde_json::from_str(&text).unwrap_or(Stopped {
        data_file: PathBuf::from("(unreadable marker)"),
        pid: 0,
        since: "(unknown)".into(),
    });
    Ok(Some(Orphan { file, record }))
}

/// The marker a dead run left, if any, without acting on it (`bkp status`).
pub fn left_behind(work: &WorkDir) -> Result<Option<Stopped>> {
    Ok(orphan(work)?.map(|o| o.record))
}

/// Looks for a marker a dead run left and, when `start` is given (the config's
/// start command for `data_file`), runs it through `run_start`; removes the
/// marker once it succeeded.
pub fn recover(
    work: &WorkDir,
    start: Option<(&Path, &dyn Fn() -> Result<()>)>,
) -> Result<Recovery> {
    let Some(o) = orphan(work)? else {
        return Ok(Recovery::Nothing);
    };
    let path = marker_path(work);
    let Some((data_file, run_start)) = start else {
        return Ok(Recovery::Down(
            o.record,
            format!(
                "this config has no start command (tigerbeetle.snapshot_mode is not \"stop\"); start the replica by hand, then remove {}",
                path.display()
            ),
        ));
    };
    if o.record.data_file != data_file {
        return Ok(Recovery::Down(
            o.record.clone(),
            format!(
                "this config's data file is {}, not the marker's {}; start that replica by hand, then remove {}",
                data_file.display(),
                o.record.data_file.display(),
                path.display()
            ),
        ));
    }
    match run_start() {
        Ok(()) => {
            fs::remove_file(&path).with_context(|| {
                format!(
                    "the start command succeeded, but the stop-window marker {} could not be removed; remove it by hand",
                    path.display()
                )
            })?;
            sync_dir(work.root());
            drop(o.file);
            Ok(Recovery::Started(o.record))
        }
        Err(e) => Ok(Recovery::Down(
            o.record,
            format!("{e:#}; every bkp run tries the start command again until it succeeds"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_window_is_left_alone_and_a_dead_one_is_recovered_once() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().join("work"));
        let data = Path::new("/var/lib/tigerbeetle/0_0.tigerbeetle");
        let ran = std::cell::Cell::new(0);
        let start = || -> Result<()> {
            ran.set(ran.get() + 1);
            Ok(())
        };

        assert!(matches!(
            recover(&work, Some((data, &start))).unwrap(),
            Recovery::Nothing
        ));
        // A live run's marker: nobody else starts the replica under it.
        let live = enter(&work, data).unwrap();
        assert!(matches!(
            recover(&work, Some((data, &start))).unwrap(),
            Recovery::Nothing
        ));
        assert!(left_behind(&work).unwrap().is_none());
        assert_eq!(ran.get(), 0);
        // A clean end removes it.
        live.leave().unwrap();
        assert!(!work.root().join(MARKER).exists());

        // A run that dies (its lock goes with its file descriptor).
        let dead = enter(&work, data).unwrap();
        drop(dead);
        let found = left_behind(&work).unwrap().unwrap();
        assert_eq!(found.data_file, data);
        assert_eq!(found.pid, std::process::id());

        // No start command: the marker stays and says why.
        match recover(&work, None).unwrap() {
            Recovery::Down(s, why) => {
                assert_eq!(s, found);
                assert!(why.contains("by hand"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Another data file's config does not start this replica.
        let other = Path::new("/elsewhere/0_0.tigerbeetle");
        assert!(matches!(
            recover(&work, Some((other, &start))).unwrap(),
            Recovery::Down(..)
        ));
        assert_eq!(ran.get(), 0);
        // A failing start command keeps the marker for the next run.
        let failing = || -> Result<()> { anyhow::bail!("unit failed to start") };
        match recover(&work, Some((data, &failing))).unwrap() {
            Recovery::Down(_, why) => assert!(why.contains("unit failed to start"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(work.root().join(MARKER).exists());
        // The next one succeeds, once.
        assert!(matches!(
            recover(&work, Some((data, &start))).unwrap(),
            Recovery::Started(_)
        ));
        assert!(matches!(
            recover(&work, Some((data, &start))).unwrap(),
            Recovery::Nothing
        ));
        assert_eq!(ran.get(), 1);
        assert!(!work.root().join(MARKER).exists());
    }

    #[test]
    fn a_damaged_marker_still_means_the_replica_may_be_down() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path());
        fs::write(dir.path().join(MARKER), b"{ not json").unwrap();
        let found = left_behind(&work).unwrap().unwrap();
        assert_eq!(found.pid, 0);
        assert!(matches!(recover(&work, None).unwrap(), Recovery::Down(..)));
    }
}
