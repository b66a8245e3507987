//! `verify`'s local state where a machine gives it none: a CI job that runs a
//! restore drill has no work_dir from earlier runs, maybe a read-only file
//! system. Verify only reads backups; its lock, scratch space and ledger spool
//! may live in a temporary directory, removed when the run ends.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::commands::Ctx;
use crate::id::BackupId;
use crate::workdir::WorkDir;

/// The run's context, with a temporary work directory when `work_dir` cannot
/// be written.
pub struct Local {
    pub ctx: Ctx,
    /// Removed when the run ends.
    temp: Option<tempfile::TempDir>,
}

impl Local {
    /// Checks that `work_dir` can be created and written (a scratch directory
    /// made and removed); when it cannot, makes a temporary one in `$TMPDIR`
    /// and says so.
    pub fn prepare(ctx: &Ctx) -> Result<Local> {
        let mut plan = ctx.plan.clone();
        let usable = {
            let w = WorkDir::new(&plan.work_dir);
            w.create().and_then(|()| w.scratch("probe").map(drop))
        };
        let temp = match usable {
            Ok(()) => None,
            Err(e) => {
                let temp = tempfile::Builder::new()
                    .prefix("bkp-verify-")
                    .tempdir()
                    .with_context(|| {
                        format!(
                            "work_dir {} is not usable ({e:#}), and no temporary directory \
                             could be made instead: set TMPDIR or BKP_WORK_DIR to a writable \
                             directory",
                            plan.work_dir.display()
                        )
                    })?;
                ctx.ui.warn(&format!(
                    "work_dir {} is not usable ({e:#}): this run keeps its lock, scratch space \
                     and ledger spool in {}, removed when it ends (BKP_WORK_DIR names another \
                     work directory)",
                    plan.work_dir.display(),
                    temp.path().display()
                ));
                plan.work_dir = temp.path().to_path_buf();
                if let Some(l) = plan.ledger.as_mut() {
                    l.spool_dir = WorkDir::new(temp.path()).ledger_spool();
                }
                Some(temp)
            }
        };
        Ok(Local {
            ctx: Ctx {
                plan,
                ui: ctx.ui,
                wait: ctx.wait,
            },
            temp,
        })
    }

    /// Whether the work directory is a temporary one.
    pub fn is_temporary(&self) -> bool {
        self.temp.is_some()
    }

    /// Where a report the store did not take is kept: in the work directory,
    /// or in `$TMPDIR` when that is temporary (the file stays after the run).
    pub fn report_file(&self, id: BackupId) -> PathBuf {
        if self.is_temporary() {
            std::env::temp_dir().join(format!("bkp-verify-{id}.json"))
        } else {
            WorkDir::new(&self.ctx.plan.work_dir).report_file("verify", id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx(work_dir: &Path) -> Ctx {
        crate::commands::test_ctx(work_dir)
    }

    #[test]
    fn a_work_dir_that_cannot_be_made_is_replaced_by_a_temporary_one() {
        let d = tempfile::tempdir().unwrap();
        // A path below a file: no one, root included, can create it.
        std::fs::write(d.path().join("file"), b"").unwrap();
        let local = Local::prepare(&ctx(&d.path().join("file/work"))).unwrap();
        assert!(local.is_temporary());
        let temp = local.ctx.plan.work_dir.clone();
        assert!(temp.is_dir());
        assert_eq!(
            local.ctx.plan.ledger.as_ref().unwrap().spool_dir,
            temp.join("ledger-spool")
        );
        let id = BackupId::new_v7(time::OffsetDateTime::now_utc());
        assert!(local.report_file(id).starts_with(std::env::temp_dir()));
        drop(local);
        assert!(!temp.exists(), "removed when the run ends");

        let good = Local::prepare(&ctx(&d.path().join("work"))).unwrap();
        assert!(!good.is_temporary());
        assert_eq!(good.ctx.plan.work_dir, d.path().join("work"));
        assert!(good.report_file(id).starts_with(d.path().join("work")));
    }
}
