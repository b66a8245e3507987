//! `bkp restore --kind sqlite`: the target envelope around the kind's engine
//! ([`crate::kinds::sqlite::restore`]): the target checked before anything is
//! read, the copy written and checked in staging beside it, then put in place.
//!
//! SQLite keeps a database's recent writes beside it (`-wal`, `-shm`, a hot
//! `-journal`); left next to a restored file, they would be replayed into it
//! on its first open. The kind's descriptor names them as part of the target,
//! and the envelope ([`super::target::Envelope`]) refuses them without
//! `--force` and removes them once the restored file is in place. A database
//! a process has open ([`in_use`]) is never replaced.

use anyhow::{Context, Result};
use serde_json::json;

use super::{Options, RestorePlan, Source};
use crate::exit::{coded, Code};
use crate::ui;

/// Refuses to replace a database a process has open (SQLite's locks show it).
pub fn in_use(target: &std::path::Path) -> Result<()> {
    if crate::kinds::sqlite::in_use(target) {
        return Err(coded(
            Code::TargetExists,
            format!(
                "refusing to replace {}: a process has it open (SQLite's locks show it); stop the application first",
                target.display()
            ),
        ));
    }
    Ok(())
}

pub fn run(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a SQLite restore needs a copy")?;
    let done = opts.envelope(rp.kind).deliver(&src.work, src.ui, |file| {
        src.ui.detail(&format!(
            "restoring SQLite copy {} from {} into {}",
            m.id,
            src.store.identity(),
            opts.target.display()
        ));
        crate::kinds::sqlite::restore(src.store, m, src.keyring, file, src.progress.clone())
    })?;
    let (target, restored) = (&done.target, &done.made);
    let elapsed = done.elapsed;
    if src.ui.json {
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
    src.ui.info(&format!(
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
