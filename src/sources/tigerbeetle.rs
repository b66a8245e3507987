//! A consistent copy of a TigerBeetle data file.
//!
//! Copying a data file while a replica writes to it gives a corrupt backup, so bkp
//! never does it. A running replica holds an exclusive `flock` on its data file;
//! bkp tries that lock without blocking to tell a live file from a quiet one, and
//! holds it while it reads so that no replica can start mid-copy. The modes:
//!
//! - `offline`: the file must be quiet (no replica); bkp locks it and reads it in
//!   place, with no local copy at all.
//! - `stop`: run the configured stop command, wait for the lock, copy the file to
//!   a scratch directory of the work directory (a reflink clone where the file
//!   system can), release the lock and run the start command. Downtime is the
//!   local copy only.
//! - `reflink`: an atomic copy-on-write clone (`FICLONE`, btrfs/xfs) of the live
//!   file, which is a crash-consistent image TigerBeetle recovers from.
//!
//! Copies live in a scratch directory (`WorkDir::scratch("snapshot")`), removed
//! when the [`Prepared`] is dropped and swept by `cleanup` should the run die.
//!
//! When a `tigerbeetle` binary is configured, the copy is checked with
//! `tigerbeetle inspect integrity` before anything is uploaded.

use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::exit::{coded, Code};
use crate::workdir::{Scratch, WorkDir};

/// How a live TigerBeetle data file is copied consistently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Only when no replica holds the file; bkp holds the file's lock while reading
    /// it, so no replica can start mid-copy.
    Offline,
    /// Run `stop`, copy, run `start`: downtime is the local copy only.
    Stop {
        stop: Vec<String>,
        start: Vec<String>,
        timeout: Duration,
    },
    /// An atomic copy-on-write clone (btrfs, xfs) of the live file.
    Reflink,
}

/// How a snapshot is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// Content-addressed chunks shared between snapshots (`chunks.rs`): only
    /// chunks the store does not hold are uploaded.
    Chunked,
    /// One self-contained archive object per snapshot.
    Archive,
}

#[derive(Debug, Clone)]
pub struct TigerBeetlePlan {
    /// The replica's data file, for `bkp snapshot`.
    pub data_file: Option<PathBuf>,
    /// `tigerbeetle.snapshot_format` as configured (the default depends on the
    /// store: see `commands/snapshot.rs`).
    pub format: Option<SnapshotFormat>,
    /// The cluster to capture logs from, for `bkp logs`.
    pub cluster: Option<ClusterPlan>,
    pub mode: SnapshotMode,
    pub binary: Option<PathBuf>,
    pub replica_args: Vec<String>,
    pub retention_days: u16,
    pub count_rows: bool,
    /// How long `bkp logs` holds the store lease on the cluster's log chain
    /// (see `lease.rs`).
    pub log_lease: std::time::Duration,
    /// Variables passed to child processes beyond the harmless ones.
    pub pass_env: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub cluster_id: u128,
    pub addresses: String,
}

/// A data file ready to be archived, and what keeps it consistent meanwhile.
pub struct Prepared {
    /// The file to read (the original in `offline` mode, else the copy).
    pub path: PathBuf,
    /// The file's name inside the archive.
    pub name: String,
    /// Its size when prepared (for progress; the manifest records what was read).
    pub size: u64,
    pub mode: &'static str,
    pub integrity_checked: bool,
    /// Why the copy as taken failed `tigerbeetle inspect integrity`, when a
    /// second copy passed once a private replica had opened it: the stored file
    /// holds torn writes that TigerBeetle repairs at start (see [`prepare`]).
    pub torn_writes: Option<String>,
    /// A problem that did not stop the backup but must fail the run afterwards
    /// (the start command failing leaves the replica down).
    pub deferred_error: Option<String>,
    _lock: Option<File>,
    /// The scratch directory holding the copy; dropping it removes the copy.
    copy: Option<Scratch>,
}

impl Prepared {
    /// Whether `path` is bkp's private copy (stop and reflink modes), which bkp
    /// may hand to a replica of its own once uploaded.
    pub fn is_copy(&self) -> bool {
        self.copy.is_some()
    }
}

fn data_file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "tigerbeetle.data_file {} has no usable file name",
                p.display()
            )
        })
}

fn open_data_file(p: &Path) -> Result<File> {
    File::open(p).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "check tigerbeetle.data_file in the config"
        } else {
            "check that bkp may read it"
        };
        coded(
            Code::Config,
            format!(
                "cannot open TigerBeetle data file {}: {e}; {hint}",
                p.display()
            ),
        )
    })
}

/// Tries the replica's lock on `f`: `Ok(true)` when taken (no replica holds it).
fn try_lock(f: &File, p: &Path) -> Result<bool> {
    match f.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("failed to lock {}", p.display()))
        }
    }
}

fn live_file_error(p: &Path) -> anyhow::Error {
    coded(
        Code::UnsafeSource,
        format!(
            "refusing to copy {}: a running TigerBeetle replica holds it open, and a copy of a live data file is corrupt. \
             Stop the replica first, or configure a safe mode: tigerbeetle.snapshot_mode = \"stop\" (with stop_command and start_command) \
             or \"reflink\" (a btrfs/xfs file system with reflink support)",
            p.display()
        ),
    )
}

/// Runs an operator-supplied command with a time limit. Its output is appended to
/// `log` (`work_dir/commands.log`), a file rather than a pipe: a start command that
/// leaves a daemon behind cannot keep bkp waiting for a pipe to close, and whatever
/// such a daemon writes stays visible to the operator.
fn run(
    cmd: &[String],
    what: &str,
    timeout: Duration,
    log_path: &Path,
    pass_env: &[String],
) -> Result<()> {
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(log_path)
        .with_context(|| format!("failed to open {}", log_path.display()))?;
    let start = log.seek(SeekFrom::End(0))?;
    // A process group of its own: Ctrl-C at a terminal signals bkp's group,
    // and a start command killed halfway would leave the replica down while
    // bkp is still there to wait for it.
    let mut child = crate::child::command(&cmd[0], pass_env)
        .args(&cmd[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
        .with_context(|| {
            format!("failed to run the {what} {cmd:?}: check the command in the config")
        })?;
    let Some(status) = crate::child::wait_timeout(&mut child, timeout)? else {
        anyhow::bail!("the {what} {cmd:?} did not finish within {timeout:?}; it was killed");
    };
    if !status.success() {
        let mut text = String::new();
        let _ = log.seek(SeekFrom::Start(start));
        let _ = log.read_to_string(&mut text);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        anyhow::bail!(
            "the {what} {cmd:?} failed ({status}): {} (full output in {})",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            log_path.display()
        );
    }
    Ok(())
}

/// Runs the start command of `snapshot_mode = "stop"` on its own: for a
/// replica a killed run left stopped (see `stop_window.rs`). `None` when the
/// config has no start command or no data file.
pub fn start_command<'a>(
    plan: &'a TigerBeetlePlan,
    work_dir: &Path,
) -> Option<(PathBuf, impl Fn() -> Result<()> + 'a)> {
    let (SnapshotMode::Stop { start, timeout, .. }, Some(data_file)) =
        (&plan.mode, &plan.data_file)
    else {
        return None;
    };
    let log_path = WorkDir::new(work_dir).command_log();
    Some((data_file.clone(), move || {
        run(start, "start command", *timeout, &log_path, &plan.pass_env)
    }))
}

/// Creates a file only its owner can read: copies of a data file are not encrypted.
fn private_file(p: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
}

/// Copies `src` into a new private file `dst`.
fn copy_private(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = private_file(dst)?;
    std::io::copy(&mut from, &mut to)?;
    to.sync_all()
}

/// `FICLONE`: an atomic copy-on-write clone of `src` into `dst`.
fn reflink(src: &File, dst: &Path) -> std::io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let out = private_file(dst)?;
    // SAFETY: both descriptors are valid open files for the duration of the call.
    let rc = unsafe { libc::ioctl(out.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = fs::remove_file(dst);
        return Err(e);
    }
    out.sync_all()
}

pub fn check_integrity(binary: &Path, file: &Path, pass_env: &[String]) -> Result<()> {
    match inspect(binary, file, pass_env)? {
        Ok(()) => Ok(()),
        Err(rejection) => Err(check_integrity_error(&rejection)),
    }
}

/// Runs `tigerbeetle inspect integrity` on `file`: an error when it cannot run,
/// else whether it passed, or why not (its exit status and last lines).
fn inspect(binary: &Path, file: &Path, pass_env: &[String]) -> Result<Result<(), String>> {
    let out = crate::child::command(binary, pass_env)
        .args(["inspect", "integrity"])
        .arg(file)
        .output()
        .with_context(|| {
            format!(
                "failed to run {} inspect integrity: check tigerbeetle.binary",
                binary.display()
            )
        })?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Ok(Err(format!(
        "{}: {}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    )))
}

/// Checks the file about to be archived with `tigerbeetle inspect integrity`,
/// and records in `prepared` that it passed, or why the copy as taken did not.
///
/// TigerBeetle has no clean stop: a replica stopped (or cloned) while it writes
/// leaves a torn write behind, a superblock copy, a WAL slot or a client reply,
/// which the replica repairs when it opens the file again. `inspect integrity`
/// opens the file read-only and rejects such a file (it cannot repair a torn
/// superblock). When a copy (never the original) is rejected, a second copy of
/// it is opened by a private replica (`settle`), which repairs it as the
/// replica would on its next start, and checked: when that passes, the copy as
/// taken is stored, the source's bytes unchanged, and its manifest says it
/// holds torn writes. Nothing of bkp's replica goes into the backup.
fn check_copy(
    binary: &Path,
    prepared: &mut Prepared,
    pass_env: &[String],
    settle: &dyn Fn(&Path) -> Result<()>,
    log: &dyn Fn(&str),
) -> Result<()> {
    let rejection = match inspect(binary, &prepared.path, pass_env)? {
        Ok(()) => {
            log("the copy passed `tigerbeetle inspect integrity`");
            prepared.integrity_checked = true;
            return Ok(());
        }
        Err(r) => r,
    };
    let first = check_integrity_error(&rejection);
    let Some(dir) = prepared.copy.as_ref().map(|c| c.path().to_path_buf()) else {
        return Err(first.context(
            "a replica stopped while it wrote leaves a torn write that it repairs when it \
             starts: if the replica was stopped mid-write, start it, let it serve, stop it \
             and snapshot again (or use snapshot_mode \"stop\", whose copy bkp checks that way)",
        ));
    };
    log(
        "the copy as taken failed `tigerbeetle inspect integrity`; a replica stopped mid-write \
         leaves torn writes that it repairs when it opens the file: checking a second copy \
         that a private replica has opened",
    );
    let trial = dir.join(format!("{}.settled", prepared.name));
    // Making the second copy is the work directory's matter (its free space),
    // not the data's.
    if let Err(e) = second_copy(&prepared.path, &trial) {
        let _ = fs::remove_file(&trial);
        return Err(e.context(format!(
            "the copy as taken failed `tigerbeetle inspect integrity` ({rejection}), and the \
             second copy that checks it could not be made: check the free space in {}, which \
             needs room for the data file twice in this case",
            dir.display()
        )));
    }
    let tried = settle(&trial).and_then(|()| inspect(binary, &trial, pass_env));
    let _ = fs::remove_file(&trial);
    match tried {
        Ok(Ok(())) => {
            log("the copy, once opened by a private replica, passed `tigerbeetle inspect integrity`");
            prepared.integrity_checked = true;
            prepared.torn_writes = Some(rejection);
            Ok(())
        }
        Ok(Err(again)) => Err(coded(
            Code::Integrity,
            format!(
                "{first:#}; and once a private replica had opened a copy of it, it failed again \
                 ({again})"
            ),
        )),
        Err(e) => Err(coded(
            Code::Integrity,
            format!("{first:#}; and a private replica could not open a copy of it: {e:#}"),
        )),
    }
}

fn check_integrity_error(rejection: &str) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!(
            "`tigerbeetle inspect integrity` rejected the copy of the data file ({rejection}). \
             Nothing was uploaded; check the replica and its disk"
        ),
    )
}

/// A copy of `src` at `dst`: a reflink clone where the file system can, else
/// a plain copy.
fn second_copy(src: &Path, dst: &Path) -> Result<()> {
    let from = File::open(src).with_context(|| format!("failed to open {}", src.display()))?;
    if reflink(&from, dst).is_ok() {
        return Ok(());
    }
    fs::copy(src, dst)
        .map(drop)
        .with_context(|| format!("failed to copy {} to {}", src.display(), dst.display()))
}

/// Makes a consistent, checked copy (or locked original) ready for archiving.
pub fn prepare(
    plan: &TigerBeetlePlan,
    data_file: &Path,
    work_dir: &Path,
    log: &dyn Fn(&str),
    settle: &dyn Fn(&Path) -> Result<()>,
) -> Result<Prepared> {
    let src = data_file;
    let name = data_file_name(src)?;
    let file = open_data_file(src)?;
    let work = WorkDir::new(work_dir);

    let (path, lock, copy, mode, deferred_error) = match &plan.mode {
        SnapshotMode::Offline => {
            if !try_lock(&file, src)? {
                return Err(live_file_error(src));
            }
            log(&format!(
                "{} is not in use; reading it in place under its lock",
                src.display()
            ));
            (src.to_path_buf(), Some(file), None, "offline", None)
        }
        SnapshotMode::Reflink => {
            let copy_dir = work.scratch("snapshot")?;
            let copy_path = copy_dir.join(&name);
            reflink(&file, &copy_path).map_err(|e| {
                coded(
                    Code::UnsafeSource,
                    format!(
                        "cannot make a reflink copy of {} into {}: {e}. Reflinks need a btrfs or xfs (reflink=1) file system and work_dir on the same file system as the data file; otherwise use snapshot_mode = \"stop\" or \"offline\"",
                        src.display(),
                        copy_dir.path().display()
                    ),
                )
            })?;
            log(&format!("cloned {} with a reflink", src.display()));
            (copy_path, None, Some(copy_dir), "reflink", None)
        }
        SnapshotMode::Stop {
            stop,
            start,
            timeout,
        } => {
            let copy_dir = work.scratch("snapshot")?;
            let copy_path = copy_dir.join(&name);
            let began = Instant::now();
            let command_log = work.command_log();
            // Marks the window, so that a run killed inside it is found and
            // the replica started by the next run (see `stop_window.rs`).
            let window = super::stop_window::enter(&work, src)?;
            let copied = (|| -> Result<()> {
                // Inside the closure: even a failed or timed-out stop command may
                // have stopped the replica, so the start command always runs.
                run(stop, "stop command", *timeout, &command_log, &plan.pass_env)?;
                let deadline = crate::units::deadline(*timeout);
                while !try_lock(&file, src)? {
                    if Instant::now() > deadline {
                        return Err(coded(
                            Code::UnsafeSource,
                            format!("the stop command ran but {} is still held by a replica after {timeout:?}: check stop_command", src.display()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if reflink(&file, &copy_path).is_err() {
                    copy_private(src, &copy_path).with_context(|| {
                        format!(
                            "failed to copy {} to {}: check free space in work_dir",
                            src.display(),
                            copy_path.display()
                        )
                    })?;
                }
                file.unlock()?;
                Ok(())
            })();
            // Whatever happened, bring the replica back.
            let _ = file.unlock();
            let restarted = run(
                start,
                "start command",
                *timeout,
                &command_log,
                &plan.pass_env,
            );
            log(&format!(
                "replica stopped for {:.1}s while {} was copied",
                began.elapsed().as_secs_f64(),
                src.display()
            ));
            match &restarted {
                Ok(()) => {
                    if let Err(e) = window.leave() {
                        log(&format!("{e:#}"));
                    }
                }
                Err(_) => window.keep(),
            }
            if let Err(e) = copied {
                drop(copy_dir);
                return Err(match restarted {
                    Ok(()) => e,
                    Err(r) => e.context(format!("and restarting the replica failed too: {r:#}")),
                });
            }
            let deferred = restarted
                .err()
                .map(|e| format!("{e:#}: the replica may still be down; start it by hand (every bkp run with this work_dir tries the start command again until it succeeds)"));
            (copy_path, None, Some(copy_dir), "stop", deferred)
        }
    };

    let mut prepared = Prepared {
        path,
        name,
        size: 0,
        mode,
        integrity_checked: false,
        torn_writes: None,
        deferred_error,
        _lock: lock,
        copy,
    };
    if let Some(binary) = &plan.binary {
        check_copy(binary, &mut prepared, &plan.pass_env, settle, log)?;
    }
    prepared.size = fs::metadata(&prepared.path)
        .with_context(|| format!("failed to read the size of {}", prepared.path.display()))?
        .len();
    Ok(prepared)
}
