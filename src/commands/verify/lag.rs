//! What a copy lacks compared with the primary, for `verify --store NAME`:
//! the backups and objects a `bkp copy` run would copy now (its dry run).
//! A lagging copy is not a damaged one, so this fails nothing: it is said,
//! and kept in the report (`copy_lacks`). A primary that cannot be read
//! (the reason to read a copy at all) is said too, and changes nothing.

use serde_json::json;

use crate::commands::Ctx;
use crate::config::StorePlan;
use crate::manifest::Trust;
use crate::store::Store;

/// Compares `copy` with the primary `primary`; what it lacks, for the report.
pub fn compare(
    ctx: &Ctx,
    primary: &StorePlan,
    copy: &dyn Store,
    trust: &Trust,
) -> serde_json::Value {
    let compared = crate::commands::open_plan_store(primary).and_then(|p| {
        // The plan reads the copy: its retention is the copy's.
        let retention = &ctx.plan.retention;
        let out =
            crate::copies::bring_up_to_date(p.as_ref(), copy, trust, retention, true, &|_| {})?;
        Ok((p.identity(), out))
    });
    let (from, out) = match compared {
        Ok(found) => found,
        Err(e) => {
            ctx.ui.warn(&format!(
                "{} was not compared with the primary store, which could not be read: {e:#}",
                copy.identity()
            ));
            return json!({"error": format!("{e:#}")});
        }
    };
    let lacks = out.backups_copied.len() as u64 + out.objects_repaired;
    if lacks == 0 {
        ctx.ui
            .info(&format!("{} holds every backup of {from}", copy.identity()));
    } else {
        ctx.ui.warn(&format!(
            "{} lacks {} of {from} and {} of backups it holds ({}): run `bkp copy` to bring it up to date",
            copy.identity(),
            crate::units::count(out.backups_copied.len() as u64, "backup"),
            crate::units::count(out.objects_repaired, "object"),
            crate::ui::size(out.bytes_copied),
        ));
        for key in &out.backups_copied {
            ctx.ui.detail(&format!("lacks {key}"));
        }
    }
    json!({"from": from, "backups": out.backups_copied, "objects": out.objects_copied, "bytes": out.bytes_copied, "objects_of_backups_held": out.objects_repaired})
}
