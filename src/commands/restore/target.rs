//! The restore target, handled once for every kind: the checks made before
//! anything is downloaded, the staging beside the target, and the durable swap.
//!
//! A restore is built in a hidden staging directory beside the target (same file
//! system, so the final rename is atomic), registered in the run's scratch so
//! that `cleanup` removes it should the run die. Every restored file and
//! directory is fsynced before the rename, and the rename before the replaced
//! tree is removed: a crash at any moment leaves either the old target or the
//! complete new one. An existing non-empty target is replaced only with
//! `--force`, and never when it holds something bkp or a running process needs.
//!
//! A database file's engine keeps files beside it (a write-ahead log) that
//! would be replayed into a new file put there: they belong to the target
//! ([`Envelope`]). With `--force` they are moved aside to hidden names
//! just before the swap (everything staged is already durable) and removed
//! after it. A crash between the two leaves the old file with them under
//! those names (`.NAME.bkp-replaced-…`), beside it: rename them back before
//! the old database is opened, or its last writes are missing from it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::{coded, Code};
use crate::workdir::{Scratch, STAGING_MARK};

/// What a restore delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A directory tree (TigerBeetle data files, a Parquet tier).
    Dir,
    /// One file (a DuckDB database).
    File,
}

/// A checked restore target.
#[derive(Debug)]
pub struct Target {
    /// The target, absolute.
    pub path: PathBuf,
    pub shape: Shape,
    /// Whether something is there that the restore replaces (`--force`).
    pub exists: bool,
    parent: PathBuf,
    name: String,
}

/// A path a restore must never replace, and what it is.
pub type Precious = (&'static str, PathBuf);

impl Target {
    /// Checks `path` before anything is downloaded: it must not exist, or be an
    /// empty directory, or (with `force`) be of the right shape; and it must not
    /// hold any `precious` path or a file a running process has locked.
    pub fn check(path: &Path, shape: Shape, force: bool, precious: &[Precious]) -> Result<Target> {
        let path = std::path::absolute(path)
            .with_context(|| format!("invalid target {}", path.display()))?;
        let parent = path
            .parent()
            .with_context(|| format!("restore target {} has no parent directory", path.display()))?
            .to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("restore target {} has no name", path.display()))?;
        let meta = fs::symlink_metadata(&path).ok();
        let exists = match (shape, &meta) {
            (_, None) => false,
            (Shape::Dir, Some(m)) if m.is_dir() => !is_empty_dir(&path)?,
            (Shape::File, Some(m)) if m.is_file() => true,
            (Shape::Dir, Some(_)) => {
                return Err(coded(
                    Code::TargetExists,
                    format!(
                        "restore target {} exists and is not a directory: choose a new directory",
                        path.display()
                    ),
                ))
            }
            (Shape::File, Some(_)) => {
                return Err(coded(
                    Code::TargetExists,
                    format!(
                        "restore target {} exists and is not a file: this restore writes a database file; choose a new path such as restored.duckdb",
                        path.display()
                    ),
                ))
            }
        };
        if exists && !force {
            return Err(coded(
                Code::TargetExists,
                match shape {
                    Shape::Dir => format!(
                        "restore target {} is not empty: choose a new directory, or pass --force to replace its contents (they are swapped out only after the restore verified)",
                        path.display()
                    ),
                    Shape::File => format!(
                        "restore target {} exists: choose a new file, or pass --force to replace it (it is replaced only after the restore verified)",
                        path.display()
                    ),
                },
            ));
        }
        let t = Target {
            path,
            shape,
            exists,
            parent,
            name,
        };
        if meta.is_some() {
            t.guard(precious)?;
        }
        Ok(t)
    }

    /// Refuses a target that holds something bkp or a replica needs, or a file
    /// that a running process has locked (a live TigerBeetle data file).
    fn guard(&self, precious: &[Precious]) -> Result<()> {
        let target = resolved(&self.path);
        for (what, p) in precious {
            let p = resolved(p);
            let hit = match self.shape {
                Shape::Dir => p.starts_with(&target),
                Shape::File => p == target,
            };
            if hit {
                return Err(coded(
                    Code::TargetExists,
                    format!(
                        "refusing to restore into {}: it holds {what} ({}); choose a new {}",
                        target.display(),
                        p.display(),
                        if self.shape == Shape::Dir {
                            "directory"
                        } else {
                            "file"
                        }
                    ),
                ));
            }
        }
        let mut stack = vec![target.clone()];
        while let Some(p) = stack.pop() {
            let meta = fs::symlink_metadata(&p)?;
            if meta.is_dir() {
                for e in
                    fs::read_dir(&p).with_context(|| format!("failed to read {}", p.display()))?
                {
                    stack.push(e?.path());
                }
            } else if meta.is_file() {
                if let Ok(f) = fs::File::open(&p) {
                    if let Err(fs::TryLockError::WouldBlock) = f.try_lock() {
                        return Err(coded(
                            Code::UnsafeSource,
                            format!("refusing to replace {}: {} is locked by a running process (a live TigerBeetle replica?); stop it or choose a new target", target.display(), p.display()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A new staging directory beside the target, registered in `scratch` (so
    /// a sweeper removes it should this run die). A [`Shape::Dir`] restore
    /// builds its tree in it; a [`Shape::File`] restore writes
    /// [`Target::staged_file`] in it.
    pub fn stage(&self, scratch: &mut Scratch) -> Result<PathBuf> {
        fs::create_dir_all(&self.parent)
            .with_context(|| format!("failed to create {}", self.parent.display()))?;
        let staging = self.parent.join(format!(
            ".{}{STAGING_MARK}restore-{:016x}",
            self.name,
            crate::id::random_u64()
        ));
        scratch.stage_outside(&staging)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("failed to create {}", staging.display()))?;
        Ok(staging)
    }

    /// Where a [`Shape::File`] restore writes its file inside `staging`.
    pub fn staged_file(&self, staging: &Path) -> PathBuf {
        staging.join(&self.name)
    }

    /// Puts the verified restore in `staging` in place: every file made 0600 and
    /// every directory 0700 (restored data is for its owner until the operator says
    /// otherwise), everything fsynced, then
    /// renamed (the old target moved aside first and removed only once the swap
    /// is durable), then the parent directory fsynced.
    pub fn commit(&self, staging: &Path, scratch: &mut Scratch) -> Result<()> {
        seal_tree(staging)?;
        self.swap(staging, scratch)
    }

    /// [`Target::commit`] of a staging already made durable (`seal_tree`).
    fn swap(&self, staging: &Path, scratch: &mut Scratch) -> Result<()> {
        crate::failpoint::hit("restore-commit");
        match self.shape {
            Shape::File => {
                // A rename over a file replaces it atomically.
                let staged = self.staged_file(staging);
                fs::rename(&staged, &self.path).with_context(|| {
                    format!("failed to move the restore into {}", self.path.display())
                })?;
                crate::workdir::sync_dir(&self.parent);
                scratch.outside_done();
                let _ = fs::remove_dir_all(staging);
            }
            Shape::Dir if self.exists || self.path.exists() => {
                match exchange(staging, &self.path) {
                    Ok(()) => {
                        // The staging path now holds the replaced tree, and the
                        // scratch still names it: should the run die before it
                        // is removed, the sweeper removes it.
                        crate::workdir::sync_dir(&self.parent);
                        crate::failpoint::hit("restore-replaced");
                        fs::remove_dir_all(staging).with_context(|| {
                            format!("failed to remove the replaced {}", staging.display())
                        })?;
                        scratch.outside_done();
                        crate::workdir::sync_dir(&self.parent);
                        return Ok(());
                    }
                    // A file system without RENAME_EXCHANGE: two renames.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("failed to move the restore into {}", self.path.display())
                        })
                    }
                }
                let old = self.parent.join(format!(
                    ".{}{STAGING_MARK}old-{:016x}",
                    self.name,
                    crate::id::random_u64()
                ));
                fs::rename(&self.path, &old)
                    .with_context(|| format!("failed to move {} aside", self.path.display()))?;
                if let Err(e) = fs::rename(staging, &self.path) {
                    let _ = fs::rename(&old, &self.path);
                    return Err(e).with_context(|| {
                        format!("failed to move the restore into {}", self.path.display())
                    });
                }
                scratch.outside_done();
                // The swap is durable before the old tree goes. (Killed from
                // here on, the run leaves the old tree aside, named `.bkp-old-`:
                // file systems without RENAME_EXCHANGE only.)
                crate::workdir::sync_dir(&self.parent);
                crate::failpoint::hit("restore-replaced");
                fs::remove_dir_all(&old)
                    .with_context(|| format!("failed to remove the replaced {}", old.display()))?;
            }
            Shape::Dir => {
                fs::rename(staging, &self.path).with_context(|| {
                    format!("failed to move the restore into {}", self.path.display())
                })?;
                scratch.outside_done();
            }
        }
        crate::workdir::sync_dir(&self.parent);
        Ok(())
    }
}

/// The envelope every restore into a path runs once: the target checked
/// (with what its kind keeps beside it, and whether a process uses it) before
/// anything is read, the countdown before an existing one is replaced, a
/// staging beside it that the engine fills, and the durable swap.
pub struct Envelope<'a> {
    pub path: &'a Path,
    pub shape: Shape,
    pub force: bool,
    /// `--yes`: no countdown.
    pub yes: bool,
    pub precious: Vec<Precious>,
    /// The work directory: the run creates it (its scratch) should it not
    /// exist, so a target not there yet must not be where it would be.
    pub work_dir: &'a Path,
    /// Suffixes of the files beside a [`Shape::File`] target that belong to it.
    pub beside: &'static [&'static str],
    /// What such a file is, for people.
    pub beside_is: &'static str,
    /// The kind's refusal of an existing target a process uses.
    pub in_use: Option<fn(&Path) -> Result<()>>,
}

/// What [`Envelope::deliver`] put in place.
pub struct Delivered<R> {
    pub target: Target,
    /// What the engine returned.
    pub made: R,
    /// From the staging's creation until the swap was durable.
    pub elapsed: std::time::Duration,
}

impl Envelope<'_> {
    /// Every check made before anything is read; what [`Envelope::deliver`]
    /// and a dry run both refuse.
    pub fn check(&self) -> Result<Target> {
        let target = Target::check(self.path, self.shape, self.force, &self.precious)?;
        if self.shape == Shape::Dir && resolved(self.work_dir).starts_with(resolved(&target.path)) {
            return Err(coded(
                Code::TargetExists,
                format!(
                    "refusing to restore into {}: it would hold the work directory ({}); choose a new directory",
                    target.path.display(),
                    self.work_dir.display()
                ),
            ));
        }
        self.left_beside(&target.path)?;
        if target.exists {
            if let Some(in_use) = self.in_use {
                in_use(&target.path)?;
            }
        }
        Ok(target)
    }

    /// The files beside `target` that belong to it: refused without `--force`.
    pub fn left_beside(&self, target: &Path) -> Result<Vec<PathBuf>> {
        let found: Vec<PathBuf> = self
            .beside
            .iter()
            .map(|s| {
                let mut n = target.as_os_str().to_owned();
                n.push(s);
                PathBuf::from(n)
            })
            .filter(|p| fs::symlink_metadata(p).is_ok())
            .collect();
        match found.first() {
            Some(first) if !self.force => Err(coded(
                Code::TargetExists,
                format!(
                    "{} exists beside the restore target ({}): move it away, choose another path, or pass --force",
                    first.display(),
                    self.beside_is
                ),
            )),
            _ => Ok(found),
        }
    }

    /// Checks the target, counts down, has `build` fill the staging (a
    /// directory for [`Shape::Dir`], the file to write for [`Shape::File`])
    /// and puts it in place. Files beside a file target are moved aside for
    /// the swap, put back if it fails, and removed once it is durable.
    pub fn deliver<R>(
        &self,
        work: &crate::workdir::WorkDir,
        ui: crate::ui::Ui,
        build: impl FnOnce(&Path) -> Result<R>,
    ) -> Result<Delivered<R>> {
        let target = self.check()?;
        super::countdown::before_replacing_named(
            &target.path.display().to_string(),
            target.exists,
            self.yes,
        )?;
        let mut scratch = work.scratch("restore")?;
        let staging = target.stage(&mut scratch)?;
        let clock = std::time::Instant::now();
        let made = match self.shape {
            Shape::Dir => build(&staging)?,
            Shape::File => build(&target.staged_file(&staging))?,
        };
        // Made durable first: the moves below and the swap follow at once.
        ui.timed(|| "made the restore durable".into(), || seal_tree(&staging))?;
        // Everything looked at again just before the swap: a target, a
        // file beside it or a process using it may have appeared meanwhile.
        let now = self.check()?;
        if now.exists && !target.exists {
            // It appeared during the build: the wait it was not given.
            super::countdown::before_replacing_named(
                &now.path.display().to_string(),
                true,
                self.yes,
            )?;
        }
        let target = Target {
            exists: now.exists,
            ..target
        };
        let mut moved = Vec::new();
        for p in self.left_beside(&target.path)? {
            let aside = aside_name(&p);
            if let Err(e) = fs::rename(&p, &aside) {
                put_back(moved);
                return Err(e).with_context(|| format!("failed to move {} aside", p.display()));
            }
            moved.push((p, aside));
        }
        if let Err(e) = target.swap(&staging, &mut scratch) {
            put_back(moved);
            return Err(e);
        }
        for (p, aside) in moved {
            let _ = fs::remove_file(aside);
            ui.warn(&format!(
                "removed {} ({}), which --force allowed",
                p.display(),
                self.beside_is
            ));
        }
        Ok(Delivered {
            target,
            made,
            elapsed: clock.elapsed(),
        })
    }
}

/// Puts files moved aside for a swap that did not happen back in place.
fn put_back(moved: Vec<(PathBuf, PathBuf)>) {
    for (p, aside) in moved {
        let _ = fs::rename(aside, p);
    }
}

/// A hidden name beside `p` to keep it under while the target is swapped
/// (a run killed between the move and the swap leaves it there, under this
/// name, with the old target).
fn aside_name(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(
        ".{name}{STAGING_MARK}replaced-{:016x}",
        crate::id::random_u64()
    ))
}

/// Swaps `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`): a crash leaves
/// either both as they were or both swapped, never the target missing.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(fs::read_dir(p)
        .with_context(|| format!("failed to read {}", p.display()))?
        .next()
        .is_none())
}

/// `p` made absolute with symlinks resolved as far as it exists.
fn resolved(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// Files whose write-back [`seal_tree`] starts before it fsyncs them.
const SEAL_BATCH: usize = 4096;

/// Makes every file under `root` 0600 and every directory (and `root`) 0700,
/// and fsyncs each: the walk sets the modes and starts the write-back of
/// [`SEAL_BATCH`] files at a time (so the disk has many to work on at once,
/// not one file at a time), then fsyncs them; the directories last.
fn seal_tree(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let fsync = |p: &PathBuf| {
        fs::File::open(p)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("failed to make {} durable", p.display()))
    };
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p)?;
        let mode = if meta.is_dir() {
            for e in fs::read_dir(&p).with_context(|| format!("failed to read {}", p.display()))? {
                stack.push(e?.path());
            }
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("failed to set the mode of {}", p.display()))?;
        if meta.is_dir() {
            dirs.push(p);
        } else {
            if let Ok(f) = fs::File::open(&p) {
                crate::direct::write_behind(&f, 0, 0);
            }
            files.push(p);
            if files.len() == SEAL_BATCH {
                files.drain(..).try_for_each(|p| fsync(&p))?;
            }
        }
    }
    files.iter().chain(dirs.iter().rev()).try_for_each(fsync)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workdir::WorkDir;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_staged_then_put_in_place() {
        let d = tempfile::tempdir().unwrap();
        let work = WorkDir::new(d.path().join("work"));
        let mut scratch = work.scratch("restore").unwrap();
        let t = Target::check(&d.path().join("out"), Shape::Dir, false, &[]).unwrap();
        assert!(!t.exists);
        let staging = t.stage(&mut scratch).unwrap();
        assert!(staging
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".out.bkp-"));
        assert_eq!(mode(&staging), 0o700, "staging is private from the start");
        fs::create_dir(staging.join("sub")).unwrap();
        fs::write(staging.join("f"), b"data").unwrap();
        fs::set_permissions(staging.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(staging.join("sub/g"), b"").unwrap();
        t.commit(&staging, &mut scratch).unwrap();
        assert_eq!(fs::read(d.path().join("out/f")).unwrap(), b"data");
        assert_eq!(mode(&d.path().join("out")), 0o700);
        assert_eq!(mode(&d.path().join("out/sub")), 0o700);
        assert_eq!(mode(&d.path().join("out/f")), 0o600);
        assert_eq!(mode(&d.path().join("out/sub/g")), 0o600);
        drop(scratch);
        assert!(
            d.path().join("out/f").exists(),
            "the scratch no longer names it"
        );
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "out and work only"
        );
    }

    #[test]
    fn a_non_empty_target_needs_force_and_is_swapped() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old"), b"old").unwrap();
        let e = Target::check(&out, Shape::Dir, false, &[]).unwrap_err();
        assert_eq!(crate::exit::exit_code(&e), crate::exit::TARGET_EXISTS);
        let work = WorkDir::new(d.path().join("work"));
        let mut scratch = work.scratch("restore").unwrap();
        let t = Target::check(&out, Shape::Dir, true, &[]).unwrap();
        let staging = t.stage(&mut scratch).unwrap();
        fs::write(staging.join("new"), b"new").unwrap();
        t.commit(&staging, &mut scratch).unwrap();
        assert!(out.join("new").exists() && !out.join("old").exists());
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "nothing aside left"
        );
    }

    #[test]
    fn an_unfinished_restore_leaves_the_target_alone() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old"), b"old").unwrap();
        let work = WorkDir::new(d.path().join("work"));
        let mut scratch = work.scratch("restore").unwrap();
        let t = Target::check(&out, Shape::Dir, true, &[]).unwrap();
        let staging = t.stage(&mut scratch).unwrap();
        fs::write(staging.join("half"), b"x").unwrap();
        drop(scratch); // the restore failed before commit
        assert!(!staging.exists());
        assert_eq!(fs::read(out.join("old")).unwrap(), b"old");
    }

    #[test]
    fn precious_paths_and_wrong_shapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(out.join("work")).unwrap();
        fs::write(out.join("work/x"), b"").unwrap();
        let precious = [("the work directory", out.join("work"))];
        let e = Target::check(&out, Shape::Dir, true, &precious).unwrap_err();
        assert!(
            format!("{e:#}").contains("it holds the work directory"),
            "{e:#}"
        );
        let db = d.path().join("hot.duckdb");
        fs::write(&db, b"").unwrap();
        let precious = [("the configured DuckDB database", db.clone())];
        assert!(Target::check(&db, Shape::File, true, &precious).is_err());
        let e = Target::check(&out, Shape::File, true, &[]).unwrap_err();
        assert_eq!(crate::exit::exit_code(&e), crate::exit::TARGET_EXISTS);
        // A locked file inside the target (a live replica's data file).
        let live = out.join("0_0.tigerbeetle");
        fs::write(&live, b"").unwrap();
        let f = fs::File::open(&live).unwrap();
        f.lock().unwrap();
        let e = Target::check(&out, Shape::Dir, true, &[]).unwrap_err();
        assert_eq!(crate::exit::exit_code(&e), crate::exit::UNSAFE_SOURCE);
    }

    const QUIET: crate::ui::Ui = crate::ui::Ui {
        level: crate::ui::Level::Quiet,
        json: false,
        bars: false,
    };

    fn envelope<'a>(path: &'a Path, force: bool) -> Envelope<'a> {
        Envelope {
            path,
            shape: Shape::File,
            force,
            yes: true,
            precious: Vec::new(),
            work_dir: Path::new("/nonexistent/work"),
            beside: &["-wal", "-shm"],
            beside_is: "a test database's log",
            in_use: None,
        }
    }

    #[test]
    fn a_target_not_there_yet_may_not_hold_the_work_directory() {
        let d = tempfile::tempdir().unwrap();
        let new = d.path().join("new");
        let work = new.join("work");
        let dir = Envelope {
            shape: Shape::Dir,
            work_dir: &work,
            ..envelope(&new, false)
        };
        let e = dir.check().unwrap_err();
        assert_eq!(crate::exit::exit_code(&e), crate::exit::TARGET_EXISTS);
        assert!(format!("{e:#}").contains("the work directory"), "{e:#}");
        // A lost source (not there) is restored to its own path.
        let lost = d.path().join("lost.db");
        let precious = vec![("the configured SQLite database", lost.clone())];
        let file = Envelope {
            precious,
            ..envelope(&lost, false)
        };
        assert!(file.check().is_ok());
    }

    #[test]
    fn files_beside_a_file_target_are_refused_then_replaced_with_it() {
        let d = tempfile::tempdir().unwrap();
        let work = WorkDir::new(d.path().join("work"));
        let db = d.path().join("r.db");
        let wal = d.path().join("r.db-wal");
        fs::write(&wal, b"an earlier database's writes").unwrap();
        // No database, but its log: refused without --force, before any build.
        let e = envelope(&db, false)
            .deliver(&work, QUIET, |_| -> Result<()> {
                panic!("built before the check")
            })
            .err()
            .unwrap();
        assert_eq!(crate::exit::exit_code(&e), crate::exit::TARGET_EXISTS);
        assert!(format!("{e:#}").contains("a test database's log"), "{e:#}");
        // A failed build leaves the log where it was.
        let e = envelope(&db, true)
            .deliver(&work, QUIET, |_| -> Result<()> { anyhow::bail!("damaged") })
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("damaged"));
        assert!(wal.exists() && !db.exists());
        // With --force the new file takes the place, and the log goes.
        let done = envelope(&db, true)
            .deliver(&work, QUIET, |f| fs::write(f, b"new").map_err(Into::into))
            .unwrap();
        assert_eq!(done.target.path, db);
        assert_eq!(fs::read(&db).unwrap(), b"new");
        assert!(!wal.exists());
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "r.db and work only: {left:?}");
    }

    #[test]
    fn a_file_restore_replaces_the_file_atomically() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("r.duckdb");
        fs::write(&db, b"old").unwrap();
        let work = WorkDir::new(d.path().join("work"));
        let mut scratch = work.scratch("restore").unwrap();
        let t = Target::check(&db, Shape::File, true, &[]).unwrap();
        let staging = t.stage(&mut scratch).unwrap();
        fs::write(t.staged_file(&staging), b"new").unwrap();
        fs::write(staging.join("r.duckdb.wal"), b"wal").unwrap();
        t.commit(&staging, &mut scratch).unwrap();
        assert_eq!(fs::read(&db).unwrap(), b"new");
        assert_eq!(mode(&db), 0o600);
        assert!(!staging.exists());
    }
}
