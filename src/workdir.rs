//! Every path bkp uses inside `work_dir`, and the one way to make scratch space.
//!
//! Why one owner: a run killed with SIGKILL runs no destructor, so whatever it
//! created stays behind. When every scratch directory is made here, one sweeper
//! ([`WorkDir::leftovers`], called by `cleanup` and at the start of each run)
//! knows every kind of leftover.
//!
//! Layout of `work_dir`:
//! - `{operation}.lock`: the run locks (`lock.rs`); never removed;
//! - `commands.log`, `replica.log`: output of the stop/start commands and of
//!   private TigerBeetle replicas; kept for the operator;
//! - `reports/{operation}-{id}.json`: run reports the store refused (a
//!   `verify` with read-only credentials); kept for the operator;
//! - `ledger-spool/`: ledger records not yet sent (`{transfer id}.json`), kept
//!   until the ledger has them, and the intents of backup runs
//!   (`{transfer id}.intent`, see `ledger/intent.rs`), settled by the next run;
//!   a write killed before its rename leaves a `.{id}.json.tmp{pid}` (or
//!   `.{id}.intent.tmp{pid}`), swept once older than the grace period;
//! - `tmp/{what}-{random}/`: scratch directories ([`Scratch`]): data-file copies,
//!   export pipes, restore spools, DuckDB rebuilds, drills. Each holds an `owner`
//!   file that its run keeps `flock`ed, so a sweeper tells a live run's scratch
//!   from a dead one's without guessing by age; a scratch may also name a staging
//!   path outside `work_dir` (a restore's staging beside its target), which the
//!   sweeper removes with it.
//!
//! Older releases put scratch directly under `work_dir` (`snapshot-{id}`,
//! `export-{id}`, `drill-{id}`, `duckdb-restore-*`, `restore-spool`,
//! `.restore-*.spool`); those names are swept too, once older than the grace
//! period.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::exit::{coded, Code};

/// The scratch directory of each run lives under this.
const TMP: &str = "tmp";
/// The file a live scratch keeps locked.
const OWNER: &str = "owner";
/// The file that names a staging path outside `work_dir`.
const OUTSIDE: &str = "outside";
/// How a scratch directory's name ends (after a `.`) until its owner holds it.
const BORN: &str = ".new";
/// The marker every staging path outside `work_dir` carries in its name.
pub const STAGING_MARK: &str = ".bkp-";

/// What to do when a file of the work directory cannot be made or written
/// (a first cleanup of years keeps some hundreds of bytes a backup there).
pub const ROOM: &str = "make room there, or set work_dir to a directory with room";

/// `work_dir`, and every name bkp uses in it.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

/// Makes a rename or removal in `dir` durable, best effort: some file systems
/// refuse fsync on a directory.
pub fn sync_dir(dir: &Path) {
    fs::File::open(dir).and_then(|d| d.sync_all()).ok();
}

/// Something a killed run left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub path: PathBuf,
    /// Staging outside `work_dir` that the leftover names (removed with it).
    pub outside: Option<PathBuf>,
}

impl WorkDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        WorkDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock file of an operation's runs.
    pub fn lock_file(&self, operation: &str) -> PathBuf {
        self.root.join(format!("{operation}.lock"))
    }

    /// Where the stop and start commands of a snapshot write their output.
    pub fn command_log(&self) -> PathBuf {
        self.root.join("commands.log")
    }

    /// Where private TigerBeetle replicas (restores, drills, row counts) log.
    pub fn replica_log(&self) -> PathBuf {
        self.root.join("replica.log")
    }

    /// The ledger spool: records not yet sent (`{transfer id}.json`), kept until
    /// the ledger has them.
    pub fn ledger_spool(&self) -> PathBuf {
        self.root.join("ledger-spool")
    }

    /// Copies of catalog bases read from the store (`manifest::catalog`):
    /// checked before each use like the store's objects, and never needed.
    pub fn catalog_bases(&self) -> PathBuf {
        self.root.join("cache").join("catalog")
    }

    /// A run report the store did not take (`reports/{operation}-{id}.json`),
    /// kept for the operator.
    pub fn report_file(&self, operation: &str, id: crate::id::BackupId) -> PathBuf {
        self.root
            .join("reports")
            .join(format!("{operation}-{id}.json"))
    }

    /// The last outcome of each operation, for recovery notifications.
    pub fn notify_state(&self) -> PathBuf {
        self.root.join("notify")
    }

    /// Creates `work_dir` (0700) if it is missing, and refuses one that another
    /// user could have made or may write: it holds decrypted data, the run
    /// locks, and what the next run acts on (its ledger spool, the leftovers
    /// it removes).
    pub fn create(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("failed to create work_dir {}", self.root.display()))?;
        private(&self.root)
    }

    /// A new scratch directory `tmp/{what}-{random}` (0700), locked as this run's
    /// until the [`Scratch`] is dropped, which removes it.
    pub fn scratch(&self, what: &str) -> Result<Scratch> {
        self.create()?;
        let tmp = self.root.join(TMP);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        // Born under a hidden name and renamed once its owner is locked: a
        // sweep never sees this run's scratch without a live owner (a sweep
        // between the two steps would take it for a dead run's and remove it).
        let name = format!("{what}-{:016x}", crate::id::random_u64());
        let path = tmp.join(&name);
        let born = tmp.join(format!(".{name}{BORN}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&born)
            .with_context(|| format!("failed to create {}", born.display()))?;
        let owner = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(born.join(OWNER))
            .and_then(|f| f.try_lock().map_err(std::io::Error::from).map(|_| f))
            .with_context(|| format!("failed to lock {}", born.join(OWNER).display()))
            .and_then(|f| {
                fs::rename(&born, &path)
                    .with_context(|| format!("failed to move {} into place", born.display()))
                    .map(|_| f)
            });
        match owner {
            Ok(owner) => Ok(Scratch {
                path,
                _owner: owner,
                outside: None,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&born);
                Err(e)
            }
        }
    }

    /// Every leftover of a dead run: scratch directories whose owner is gone, and
    /// the scratch names of older releases and half-written spool records once
    /// older than `grace`.
    pub fn leftovers(&self, grace: Duration) -> Vec<Leftover> {
        let mut out = Vec::new();
        for path in entries(&self.root.join(TMP)) {
            let being_born = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.ends_with(BORN));
            if being_born {
                // A run is making it now, or was killed while it did.
                if older_than(&path, grace) {
                    out.push(Leftover {
                        path,
                        outside: None,
                    });
                }
                continue;
            }
            if owner_alive(&path) {
                continue;
            }
            let outside = fs::read_to_string(path.join(OUTSIDE))
                .ok()
                .map(PathBuf::from)
                .filter(|p| is_staging_name(p));
            out.push(Leftover { path, outside });
        }
        for path in entries(&self.root) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let legacy = ["snapshot-", "export-", "drill-", "duckdb-restore-"]
                .iter()
                .any(|p| name.starts_with(p) && path.is_dir())
                || name == "restore-spool"
                || (name.starts_with(".restore-") && name.ends_with(".spool"));
            if legacy && older_than(&path, grace) {
                out.push(Leftover {
                    path,
                    outside: None,
                });
            }
        }
        // A spooled record is written to `.{id}.json.tmp{pid}` and then renamed
        // (ledger.rs); a run killed in between leaves the temporary file, which no
        // reader of the spool looks at. Complete records are never leftovers.
        for path in entries(&self.ledger_spool()) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let partial = name.contains(".json.tmp") || name.contains(".intent.tmp");
            if name.starts_with('.') && partial && older_than(&path, grace) {
                out.push(Leftover {
                    path,
                    outside: None,
                });
            }
        }
        out
    }
}

/// Removes a leftover (and the staging it names); succeeds when it is gone.
pub fn remove(l: &Leftover) -> std::io::Result<()> {
    if let Some(o) = &l.outside {
        remove_path(o)?;
    }
    remove_path(&l.path)
}

/// A run's scratch directory, removed (with any staging it names) when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    _owner: File,
    outside: Option<PathBuf>,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Records that this run stages at `p`, outside `work_dir` (its name must
    /// carry [`STAGING_MARK`]), so that a sweeper can remove it should the run
    /// die. The record is durable before this returns.
    pub fn stage_outside(&mut self, p: &Path) -> Result<()> {
        anyhow::ensure!(
            is_staging_name(p),
            "internal: staging path {} lacks the {STAGING_MARK} mark",
            p.display()
        );
        let file = self.path.join(OUTSIDE);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("failed to create {}", file.display()))?;
        f.write_all(p.as_os_str().as_encoded_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("failed to write {}", file.display()))?;
        self.outside = Some(p.to_path_buf());
        Ok(())
    }

    /// The staging outside `work_dir` was put in place (or removed) by its run:
    /// nothing to remove there any more.
    pub fn outside_done(&mut self) {
        self.outside = None;
        let _ = fs::remove_file(self.path.join(OUTSIDE));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(o) = self.outside.take() {
            let _ = remove_path(&o);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn is_staging_name(p: &Path) -> bool {
    p.is_absolute()
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.contains(STAGING_MARK))
}

fn owner_alive(dir: &Path) -> bool {
    match File::open(dir.join(OWNER)) {
        Ok(f) => matches!(f.try_lock(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

fn older_than(p: &Path, grace: Duration) -> bool {
    p.symlink_metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > grace)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn remove_path(p: &Path) -> std::io::Result<()> {
    let r = match p.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Refuses `dir` (a work directory) where another user may write it, or where
/// it, or a link naming it, belongs to another user who could have made it
/// (its parent is writable by others, as `/tmp`): a directory root made, or
/// its own user, is trusted.
fn private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let read = |p: &Path, follow: bool| {
        let meta = if follow {
            fs::metadata(p)
        } else {
            fs::symlink_metadata(p)
        };
        meta.with_context(|| format!("failed to read work_dir {}", p.display()))
    };
    let refuse = |why: String, fix: &str| {
        Err(coded(
            Code::Config,
            format!(
                "work_dir {} {why}: it holds decrypted data and what the next run acts on. {fix}, or choose a directory of this user's own (work_dir, BKP_WORK_DIR)",
                dir.display()
            ),
        ))
    };
    let meta = read(dir, true)?;
    if meta.mode() & 0o022 != 0 {
        let why = format!(
            "may be written by other users (mode {:o})",
            meta.mode() & 0o7777
        );
        return refuse(why, &format!("chmod go-w {}", dir.display()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // The name as given (a link another user put there counts as theirs;
    // without a trailing slash, which would follow it), then the directory
    // it leads to, each in its own parent.
    let name: PathBuf = dir.components().collect();
    let real = fs::canonicalize(dir)
        .with_context(|| format!("failed to read work_dir {}", dir.display()))?;
    for (what, path, meta) in [
        ("it", name.as_path(), read(&name, false)?),
        ("the directory it leads to", real.as_path(), meta),
    ] {
        if meta.uid() == me || meta.uid() == 0 {
            continue;
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = fs::metadata(parent.unwrap_or(Path::new(".")));
        if parent.is_ok_and(|p| p.mode() & 0o022 == 0) {
            continue;
        }
        let why = format!(
            "is named in a directory others may write, and {what} belongs to user {}, who could have made it",
            meta.uid()
        );
        return refuse(why, "Remove it if no run of yours made it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_dir_another_user_may_write_or_could_have_made_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let w = WorkDir::new(d.path().join("work"));
        w.create().unwrap();
        assert_eq!(
            fs::metadata(&w.root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        w.scratch("x").unwrap();
        fs::set_permissions(&w.root, fs::Permissions::from_mode(0o777)).unwrap();
        for e in [
            w.create().unwrap_err(),
            w.scratch("x").map(drop).unwrap_err(),
        ] {
            assert_eq!(crate::exit::classify(&e), Some(Code::Config), "{e:#}");
            assert!(format!("{e:#}").contains("mode 777"), "{e:#}");
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // Another user's, in a directory anyone may write (as /tmp).
        let shared = d.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let planted = shared.join("work");
        fs::create_dir(&planted).unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        let e = WorkDir::new(&planted).create().unwrap_err();
        assert!(format!("{e:#}").contains("belongs to user 65534"), "{e:#}");
        // A link of that user's there, to a directory of root's.
        let link = shared.join("link");
        let roots = d.path().join("roots");
        fs::create_dir(&roots).unwrap();
        std::os::unix::fs::symlink(&roots, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let e = WorkDir::new(&link).create().unwrap_err();
        assert!(
            format!("{e:#}").contains("it belongs to user 65534"),
            "{e:#}"
        );
        // Named with a trailing slash, which would follow the link.
        let slash = PathBuf::from(format!("{}/", link.display()));
        let e = WorkDir::new(&slash).create().unwrap_err();
        assert!(
            format!("{e:#}").contains("it belongs to user 65534"),
            "{e:#}"
        );
        WorkDir::new(&roots).create().unwrap();
        // A link of root's in a private directory, to that user's directory
        // in the shared one: the directory is judged where it lies.
        fs::create_dir(shared.join("theirs")).unwrap();
        std::os::unix::fs::chown(shared.join("theirs"), Some(65534), Some(65534)).unwrap();
        let mine = d.path().join("mine");
        std::os::unix::fs::symlink(shared.join("theirs"), &mine).unwrap();
        let e = WorkDir::new(&mine).create().unwrap_err();
        assert!(
            format!("{e:#}").contains("the directory it leads to belongs to user 65534"),
            "{e:#}"
        );
        // The same in a directory only root may write: made by root for it.
        let system = d.path().join("system");
        fs::create_dir(&system).unwrap();
        fs::set_permissions(&system, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&planted, system.join("work")).unwrap();
        WorkDir::new(system.join("work")).create().unwrap();
    }

    #[test]
    fn a_live_scratch_is_no_leftover_and_goes_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let w = WorkDir::new(d.path());
        let s = w.scratch("drill").unwrap();
        assert!(s.path().is_dir());
        assert!(s.path().starts_with(d.path().join("tmp")));
        assert!(w.leftovers(Duration::ZERO).is_empty());
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists());
    }

    /// A sweep running while another run makes its scratch never takes that
    /// scratch for a dead run's: it is found only once its owner holds it, or
    /// as a directory being born, which is a leftover only after the grace.
    #[test]
    fn a_scratch_being_made_is_never_swept() {
        let d = tempfile::tempdir().unwrap();
        let w = WorkDir::new(d.path());
        let stop = std::sync::atomic::AtomicBool::new(false);
        /// Stops the sweep however the test ends (a panic included).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        std::thread::scope(|t| {
            let _stop = Stop(&stop);
            // (It may also remove a scratch being dropped: that is harmless.)
            t.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for l in w.leftovers(Duration::from_secs(3600)) {
                        let _ = remove(&l);
                    }
                }
            });
            for _ in 0..500 {
                let s = w.scratch("race").expect("a scratch being made was swept");
                assert!(s.path().is_dir(), "a live scratch was swept");
                fs::write(s.join("f"), b"x").expect("a live scratch was swept");
            }
        });
        // One left being born by a killed run goes once older than the grace.
        let born = d.path().join("tmp").join(format!(".race-1{BORN}"));
        fs::create_dir(&born).unwrap();
        assert!(w.leftovers(Duration::from_secs(3600)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        let l = w.leftovers(Duration::from_millis(1));
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].path, born);
    }

    #[test]
    fn leftovers_name_their_outside_staging() {
        let d = tempfile::tempdir().unwrap();
        let w = WorkDir::new(d.path().join("work"));
        // A dead run's scratch, as a killed process leaves it: no lock held.
        let dead = d.path().join("work/tmp/restore-00000000000000aa");
        fs::create_dir_all(&dead).unwrap();
        File::create(dead.join(OWNER)).unwrap();
        let staging = d.path().join(".target.bkp-restore-2");
        fs::create_dir(&staging).unwrap();
        fs::write(dead.join(OUTSIDE), staging.as_os_str().as_encoded_bytes()).unwrap();
        // A path that is not bkp's staging is never named, whatever the file says.
        let other = d.path().join("precious");
        fs::create_dir(&other).unwrap();
        let dead2 = d.path().join("work/tmp/restore-00000000000000bb");
        fs::create_dir_all(&dead2).unwrap();
        fs::write(dead2.join(OUTSIDE), other.as_os_str().as_encoded_bytes()).unwrap();
        let live = w.scratch("drill").unwrap();

        let mut found = w.leftovers(Duration::ZERO);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            found,
            vec![
                Leftover {
                    path: dead.clone(),
                    outside: Some(staging.clone())
                },
                Leftover {
                    path: dead2.clone(),
                    outside: None
                },
            ]
        );
        for l in &found {
            remove(l).unwrap();
        }
        assert!(!dead.exists() && !staging.exists() && !dead2.exists());
        assert!(other.exists(), "not bkp's: kept");
        assert!(live.path().exists(), "a live run's scratch is kept");
    }

    #[test]
    fn legacy_names_are_swept_after_the_grace_period() {
        let d = tempfile::tempdir().unwrap();
        let w = WorkDir::new(d.path());
        for n in ["snapshot-x", "drill-y", "duckdb-restore-z", "restore-spool"] {
            fs::create_dir(d.path().join(n)).unwrap();
        }
        fs::write(d.path().join(".restore-1.spool"), b"x").unwrap();
        fs::write(d.path().join("snapshot.lock"), b"").unwrap();
        fs::write(d.path().join("commands.log"), b"").unwrap();
        assert!(w.leftovers(Duration::from_secs(3600)).is_empty());
        let found = w.leftovers(Duration::ZERO);
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn a_killed_spool_write_is_swept_after_the_grace_period_and_records_stay() {
        let d = tempfile::tempdir().unwrap();
        let w = WorkDir::new(d.path());
        let spool = w.ledger_spool();
        assert_eq!(spool, d.path().join("ledger-spool"));
        fs::create_dir_all(&spool).unwrap();
        // A record, and the temporary file of a write that never got renamed.
        fs::write(spool.join("123.json"), b"{}").unwrap();
        let half = spool.join(".124.json.tmp4242");
        fs::write(&half, b"{").unwrap();
        assert!(w.leftovers(Duration::from_secs(3600)).is_empty());
        let found = w.leftovers(Duration::ZERO);
        assert_eq!(
            found,
            vec![Leftover {
                path: half,
                outside: None
            }]
        );
    }
}
