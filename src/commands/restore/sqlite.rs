//! `bkp restore --kind sqlite`: the target envelope around the kind's engine
//! ([`crate::kinds::sqlite::restore`]): the target checked before anything is
//! read, the copy written and checked in staging beside it, then put in place.
//!
//! SQLite keeps a database's recent writes beside it (`-wal`, `-shm`, a hot
//! `-journal`); left next to a restored file, they would be replayed into it
//! on its first open. So they count as part of the target: one present is
//! refused without `--force` (looked for again just before the swap), and with
//! it they are moved aside beside it, removed once the restored file is in
//! place, and put back if the swap fails. A database a process has open is
//! never replaced.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::target::{Shape, Target};
use super::{RestorePlan, Source};
use crate::cli::RestoreArgs;
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::ui;

/// The files SQLite keeps beside database `p`.
fn beside(p: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let mut n = p.as_os_str().to_owned();
            n.push(s);
            PathBuf::from(n)
        })
        .collect()
}

/// The files SQLite left beside `target`: refused without `force`.
fn refuse_sidecars(target: &Path, force: bool) -> Result<Vec<PathBuf>> {
    let found: Vec<PathBuf> = beside(target)
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect();
    match found.first() {
        Some(first) if !force => Err(coded(
            Code::TargetExists,
            format!(
                "{} exists beside the restore target (SQLite's record of writes to a database there): move it away, choose another path, or pass --force",
                first.display()
            ),
        )),
        _ => Ok(found),
    }
}

/// A hidden name beside `p` to keep it under while the target is swapped.
fn aside_name(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(
        ".{name}.bkp-replaced-{:016x}",
        crate::id::random_u64()
    ))
}

pub fn run(ctx: &Ctx, src: &Source, rp: &RestorePlan, args: &RestoreArgs) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a SQLite restore needs a copy")?;
    let target = Target::check(
        args.target(),
        Shape::File,
        args.force,
        &super::precious(&ctx.plan),
    )?;
    refuse_sidecars(&target.path, args.force)?;
    if target.exists && crate::kinds::sqlite::in_use(&target.path) {
        return Err(coded(
            Code::TargetExists,
            format!(
                "refusing to replace {}: a process has it open (SQLite's locks show it); stop the application first",
                target.path.display()
            ),
        ));
    }
    super::countdown::before_replacing(&target, args.yes)?;
    let mut scratch = src.work.scratch("restore")?;
    let staging = target.stage(&mut scratch)?;
    let clock = Instant::now();
    ctx.ui.detail(&format!(
        "restoring SQLite copy {} from {} into {}",
        m.id,
        src.store.identity(),
        target.path.display()
    ));
    let restored = crate::kinds::sqlite::restore(
        src.store,
        m,
        src.keyring,
        &target.staged_file(&staging),
        src.progress.clone(),
    )?;
    // Looked at again just before the swap: one may have appeared meanwhile.
    let stale = refuse_sidecars(&target.path, args.force)?;
    let mut moved = Vec::new();
    for p in &stale {
        let aside = aside_name(p);
        fs::rename(p, &aside).with_context(|| format!("failed to move {} aside", p.display()))?;
        moved.push((p, aside));
    }
    if let Err(e) = target.commit(&staging, &mut scratch) {
        for (p, aside) in moved {
            let _ = fs::rename(aside, p);
        }
        return Err(e);
    }
    for (p, aside) in moved {
        let _ = fs::remove_file(aside);
        ctx.ui.warn(&format!(
            "removed {} (SQLite's record of writes to the database replaced, which --force allowed)",
            p.display()
        ));
    }
    let elapsed = clock.elapsed();
    if ctx.ui.json {
        return ui::document(json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "sqlite",
            "target": target.path.display().to_string(),
            "tables": restored.tables,
            "rows": restored.rows(),
            "bytes": restored.bytes,
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    ctx.ui.info(&format!(
        "restored SQLite copy {} into {}: {}, {}, integrity checked and every count verified, in {:.1}s ({})",
        m.id,
        target.path.display(),
        crate::units::count(restored.tables.len() as u64, "table"),
        crate::units::count(restored.rows(), "row"),
        elapsed.as_secs_f64(),
        ui::size(restored.bytes),
    ));
    ui::print(&target.path.display().to_string())
}
